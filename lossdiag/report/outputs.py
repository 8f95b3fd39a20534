"""Everything a finished (or killed) run leaves in its output folder, written from its diagnosis."""
from __future__ import annotations

from pathlib import Path

from lossdiag.diagnose import Diagnosis
from lossdiag.report.files import summary_json, write_atomic

SUMMARY = "summary.json"
REPORT = "report.html"


def write_outputs(out: Path, diagnosis: Diagnosis, summary: dict) -> list[Path]:
    """Write summary.json, the PNG figures and report.html into `out` and return the paths written.

    A figure this run cannot draw removes the same-named PNG an earlier run left, so a folder never mixes runs.
    """
    from lossdiag.report.figures import FIGURE_NAMES, report_figures
    from lossdiag.report.html import page

    out = Path(out)
    path = out / SUMMARY
    write_atomic(path, summary_json(summary))
    written = [path]
    figures = report_figures(diagnosis, summary)
    drawn = {figure.name: figure.png for figure in figures if figure.png is not None}
    for name in FIGURE_NAMES:
        png = out / f"{name}.png"
        if name in drawn:
            write_atomic(png, drawn[name])
            written.append(png)
        else:
            png.unlink(missing_ok=True)
    report = out / REPORT
    write_atomic(report, page(diagnosis, summary, figures))
    return [*written, report]
