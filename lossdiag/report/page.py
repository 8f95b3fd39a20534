"""The HTML shared by every page lossdiag writes (report.html, sweep.html and their notebook fragments): the
stylesheet, escaping, tables, the figures section and the offline document around a body."""
from __future__ import annotations

import base64
import html
from typing import Any, Sequence

from lossdiag.report.figures.png import ReportFigure
from lossdiag.report.text import safe

ROOT = "lossdiag-report"
POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
CSS = """
.lossdiag-report { font-family: system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif; color: #1a1a1a;
  background: #ffffff; line-height: 1.45; max-width: 980px; margin: 0 auto; padding: 1.2em; font-size: 15px; }
.lossdiag-report p, .lossdiag-report li, .lossdiag-report td, .lossdiag-report th, .lossdiag-report h1,
.lossdiag-report h2, .lossdiag-report pre, .lossdiag-report code, .lossdiag-report strong,
.lossdiag-report figcaption { color: inherit; background-color: transparent; }
.lossdiag-report h1 { font-size: 1.5em; margin: 0 0 0.2em; }
.lossdiag-report h2 { font-size: 1.15em; margin: 1.6em 0 0.5em; border-bottom: 1px solid #cccccc; }
.lossdiag-report .ld-meta, .lossdiag-report .ld-note { color: #4a4a4a; font-size: 0.9em; margin: 0.3em 0; }
.lossdiag-report .ld-meta, .lossdiag-report .ld-banner, .lossdiag-report code { overflow-wrap: anywhere; }
.lossdiag-report .ld-banner { border: 2px dashed #8a5a00; background: #fff6e0; padding: 0.5em 0.8em;
  margin: 0.6em 0; }
.lossdiag-report .ld-verdict { border-left-width: 8px; border-left-style: solid; background: #f4f4f4;
  padding: 0.7em 1em; margin: 1em 0; font-size: 1.1em; }
.lossdiag-report .ld-verdict p { margin: 0.3em 0 0; }
.lossdiag-report .ld-ok { border-color: #009e73; } .lossdiag-report .ld-warning { border-color: #e69f00; }
.lossdiag-report .ld-error { border-color: #d55e00; } .lossdiag-report .ld-info { border-color: #0072b2; }
.lossdiag-report .ld-badge { display: inline-block; font-weight: bold; font-size: 0.8em; letter-spacing: 0.05em;
  text-transform: uppercase; border: 1px solid #1a1a1a; padding: 0 0.4em; border-radius: 3px; background: #ffffff; }
.lossdiag-report code, .lossdiag-report pre { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas,
  monospace; font-size: 0.92em; }
.lossdiag-report pre { background: #f4f4f4; border: 1px solid #dddddd; padding: 0.6em 0.8em; overflow-x: auto;
  white-space: pre-wrap; word-break: break-word; margin: 0.4em 0; }
.lossdiag-report pre.ld-paste { font-size: 1.05em; font-weight: bold; border: 2px solid #1a1a1a; }
.lossdiag-report ol.ld-findings { padding-left: 1.4em; }
.lossdiag-report ol.ld-findings li { border-left-width: 5px; border-left-style: solid; padding: 0.2em 0.7em;
  margin: 0.6em 0; }
.lossdiag-report ol.ld-findings p { margin: 0.2em 0; }
.lossdiag-report table { border-collapse: collapse; margin: 0.4em 0; font-size: 0.92em; }
.lossdiag-report th, .lossdiag-report td { border: 1px solid #cccccc; padding: 0.25em 0.6em; text-align: right;
  vertical-align: top; }
.lossdiag-report th { background: #eeeeee; } .lossdiag-report td.ld-text, .lossdiag-report th.ld-text {
  text-align: left; word-break: break-word; }
.lossdiag-report figure { margin: 1.2em 0; }
.lossdiag-report figure img { max-width: 100%; height: auto; border: 1px solid #eeeeee; }
.lossdiag-report figcaption { font-size: 0.9em; color: #333333; }
.lossdiag-report details summary { cursor: pointer; }
"""


def esc(value: Any) -> str:
    """A user string made inert for HTML: control characters shown, markup escaped."""
    return html.escape(safe(value), quote=True)


def tag(name: str, content: str, css: str = "") -> str:
    """An element around already-escaped content, with an optional class."""
    attribute = f' class="{css}"' if css else ""
    return f"<{name}{attribute}>{content}</{name}>"


def table(header: Sequence[str], rows: Sequence[Sequence[str]], text_columns: int = 1) -> str:
    """An HTML table from already-escaped cells; the first `text_columns` columns are left-aligned."""
    def cells(name: str, row: Sequence[str]) -> str:
        return "".join(tag(name, cell, "ld-text" if c < text_columns else "") for c, cell in enumerate(row))
    body = "".join(tag("tr", cells("td", row)) for row in rows)
    return f"<table><thead><tr>{cells('th', header)}</tr></thead><tbody>{body}</tbody></table>"


def figures_section(figures: Sequence[ReportFigure]) -> str:
    """The figures as embedded PNGs with their captions; a figure not drawn says why."""
    parts = [tag("h2", "Figures")]
    for figure in figures:
        if figure.png is None:
            parts.append(tag("p", f"<strong>{esc(figure.title)}:</strong> not drawn ({esc(figure.note)}).",
                             "ld-note"))
            continue
        data = base64.b64encode(figure.png).decode("ascii")
        parts.append(f'<figure id="ld-{esc(figure.name)}"><img src="data:image/png;base64,{data}" '
                     f'alt="{esc(figure.title)}: {esc(figure.caption)}">'
                     f"<figcaption><strong>{esc(figure.title)}.</strong> {esc(figure.caption)}</figcaption></figure>")
    return "".join(parts)


def document(title: str, body: str) -> str:
    """A whole offline page around an escaped body: inline CSS, and a policy forbidding every script and fetch."""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{POLICY}">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{CSS}</style></head>"
            f'<body><div class="{ROOT}">{body}</div></body></html>\n')


def inline(body: str) -> str:
    """An escaped body as a notebook fragment: CSS scoped to the page's root class, no iframe."""
    return f'<div class="{ROOT}"><style>{CSS}</style>{body}</div>'
