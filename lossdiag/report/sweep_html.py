"""sweep.html: the verdict and the line to paste first, then the table of points, the figure and the options.

The same offline page as report.html (its CSS, escaping, policy and embedded figures), and a fragment of it for
a notebook's `_repr_html_`.
"""
from __future__ import annotations

from typing import Optional, Sequence

from lossdiag.report.figures.png import ReportFigure
from lossdiag.report.page import document, esc, figures_section, inline, table, tag
from lossdiag.report.sweep_view import context_line, judged_on, paste_lines, points_table, verdict
from lossdiag.report.text import option_rows


def _header(sweep: dict) -> str:
    meta = f"{esc(sweep['source'])} · {len(sweep['terms'])} terms · {esc(context_line(sweep))}"
    parts = [tag("h1", "lossdiag sweep"), tag("p", meta, "ld-meta")]
    if sweep["ended_early"]:
        parts.append(tag("p", f"<strong>This sweep ended early:</strong> {len(sweep['points'])} of "
                              f"{sweep['planned_points']} points finished (killed or crashed). Everything below "
                              "covers the points that finished.", "ld-banner"))
    parts += [tag("p", f"<strong>Damaged records:</strong> {esc(repair)}.", "ld-banner")
              for repair in sweep.get("record_repairs", [])]
    return "".join(parts)


def _verdict(sweep: dict, model_path: Optional[str]) -> str:
    status = "ok" if sweep["recommended"] is not None else "warning"
    lines = paste_lines(sweep, model_path)
    paste = ""
    if lines:
        paste = (tag("p", "Paste this as your total loss:", "ld-note") + tag("pre", esc(lines[0]), "ld-paste")
                 + (tag("pre", "\n".join(esc(line) for line in lines[1:])) if len(lines) > 1 else ""))
    return (f'<section class="ld-verdict ld-{status}"><span class="ld-badge">{status}</span>'
            f"{tag('p', esc(verdict(sweep)))}</section>{paste}")


def _points(sweep: dict) -> str:
    points = points_table(sweep)
    cells = [[esc(cell) for cell in row] for row in points.rows]
    note = (f"progress: each term's relative drop on the {judged_on(sweep['probe'])} after the run "
            f"(from ~0: a term that starts near 0). score: {esc(sweep['criterion'])}. "
            "Pareto: no other point makes every term progress more.")
    return (tag("h2", f"Points ({len(cells)})") + table([esc(h) for h in points.header], cells, points.text_columns)
            + tag("p", note, "ld-note"))


def _config(sweep: dict, config: dict) -> str:
    rows = [[esc(key), esc(value)] for key, value in option_rows(config)]
    content = table(["option", "value"], rows, 2) + tag("p", f"lossdiag {esc(sweep['lossdiag_version'])}", "ld-note")
    return f"<details><summary>Configuration</summary>{content}</details>"


def _body(sweep: dict, config: dict, figures: Sequence[ReportFigure], model_path: Optional[str]) -> str:
    return "".join([_header(sweep), _verdict(sweep, model_path), _points(sweep), figures_section(figures),
                    _config(sweep, config)])


def _model_path(sweep: dict) -> Optional[str]:
    return sweep["source"] if str(sweep["source"]).endswith(".py") else None


def sweep_page(sweep: dict, config: dict, figures: Sequence[ReportFigure]) -> str:
    """The whole sweep.html from sweep.json's content, the sweep's options and its figures."""
    title = f"lossdiag sweep · {sweep['source']}"
    return document(title, _body(sweep, config, figures, _model_path(sweep)))


def sweep_fragment(sweep: dict, config: dict, figures: Sequence[ReportFigure]) -> str:
    """The sweep page as a notebook fragment."""
    return inline(_body(sweep, config, figures, _model_path(sweep)))
