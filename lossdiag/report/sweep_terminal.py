"""The sweep as terminal text: what was run, the verdict, the table of points and the line to paste, rendered from
the sweep's view (report/sweep_view.py), which sweep.html renders too."""
from __future__ import annotations

from typing import Optional

from lossdiag.report.sweep_view import context_line, paste_lines, points_table, verdict
from lossdiag.report.text import aligned, plain, safe


def render_sweep(sweep: dict, model_path: Optional[str] = None, out: Optional[str] = None) -> str:
    """The whole sweep summary as text."""
    lines = [f"lossdiag {sweep['lossdiag_version']} · {safe(sweep['source'])} · sweep · {len(sweep['terms'])} terms",
             context_line(sweep)]
    if sweep["ended_early"]:
        lines.append("the sweep ended early (killed or crashed): this covers the points that finished")
    lines += [f"damaged records: {repair}" for repair in sweep.get("record_repairs", [])]
    lines += ["", safe(verdict(sweep)), ""]
    points = points_table(sweep)
    lines += aligned(points.header, points.rows)
    lines += ["", "score: " + safe(sweep["criterion"])]
    paste = paste_lines(sweep, model_path)
    if paste:
        lines += ["", "recommended weights:", *(f"  {line}" for line in paste)]
    if out:
        lines += ["", f"outputs in {safe(out)}/"]
    return plain(lines)
