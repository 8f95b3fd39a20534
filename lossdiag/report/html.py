"""The report page: one offline HTML file (inline CSS, figures as base64 PNG, no script, nothing fetched),
and the same content as a fragment with scoped CSS for Jupyter's `_repr_html_`."""
from __future__ import annotations

import base64
import html
import json
from typing import Any, Optional, Sequence

from lossdiag.advise.diagnose import Diagnosis
from lossdiag.checks.findings import SEVERITY_ORDER
from lossdiag.report.terminal import advice_lines, number, safe, term_text

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


def _tag(name: str, content: str, css: str = "") -> str:
    attribute = f' class="{css}"' if css else ""
    return f"<{name}{attribute}>{content}</{name}>"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], text_columns: int = 1) -> str:
    """An HTML table from already-escaped cells; the first `text_columns` columns are left-aligned."""
    def cells(tag: str, row: Sequence[str]) -> str:
        return "".join(_tag(tag, cell, "ld-text" if c < text_columns else "") for c, cell in enumerate(row))
    body = "".join(_tag("tr", cells("td", row)) for row in rows)
    return f"<table><thead><tr>{cells('th', header)}</tr></thead><tbody>{body}</tbody></table>"


def _header(diagnosis: Diagnosis, summary: dict) -> str:
    shared = summary["shared_parameters"]
    source = summary.get("source") or ""
    origin = "recorded in the training loop by lossdiag.Monitor" if source == "monitor" else esc(source)
    meta = (f"{origin} · {esc(summary['steps'])} steps ({esc(summary['recorded_steps'])} with gradients recorded) · "
            f"{len(summary['terms'])} terms · {esc(shared['count'])} shared parameters "
            f"({esc(format(shared['numel'], ','))} values)")
    return _tag("h1", "lossdiag report") + _tag("p", meta, "ld-meta") + "".join(
        _tag("p", note, "ld-banner") for note in _banners(diagnosis, summary))


def _banners(diagnosis: Diagnosis, summary: dict) -> list[str]:
    """Warnings about the run itself: it ended early, its last line was torn, its gradients are a proxy."""
    run = diagnosis.run
    notes = []
    if summary.get("ended_early"):
        last = f"step {int(run.loss_steps[-1])}" if len(run.loss_steps) else "its header"
        planned = run.config.get("steps") if summary.get("source") != "monitor" else None
        of = f" of {esc(planned)} planned" if isinstance(planned, int) else ""
        torn = " Its last line was cut in the middle and was skipped." if run.torn else ""
        notes.append(f"<strong>This run ended early:</strong> its records stop at {last}{of}, with no end record "
                     f"(killed, crashed or still running). Everything below covers what was recorded.{torn}")
    notes += [f"<strong>Damaged records:</strong> {esc(repair)}." for repair in summary.get("record_repairs", [])]
    scope = summary.get("scope", "all")
    if scope != "all":
        notes.append(f"<strong>Proxy scope '{esc(scope)}':</strong> gradients were measured on a proxy, not on "
                     "every shared parameter; shares, cosines and the suggestion describe that proxy and can "
                     "differ from the full shared parameters.")
    return notes


def _verdict(summary: dict) -> str:
    status = summary["status"]
    return (f'<section class="ld-verdict ld-{esc(status)}"><span class="ld-badge">{esc(status)}</span>'
            f"{_tag('p', esc(summary['verdict']))}</section>")


def _recommendation(summary: dict) -> str:
    """Weights in force against recommended, each term's share and progress under both, the line to paste."""
    kind = summary.get("recommendation")
    if kind is None:
        return ""
    source = summary.get("source") or ""
    lines = [line.strip() for line in advice_lines(summary, source if source.endswith(".py") else None)]
    table = [line for line in lines[2:] if not line.startswith(("loss_total", "check it", "in brackets", "the weights",
                                                                "from only", "refine round"))]
    paste = next((line for line in lines if line.startswith("loss_total")), None)
    rest = [line for line in lines if line.startswith(("check it", "in brackets", "the weights", "from only",
                                                       "refine round"))]
    parts = [_tag("h2", f"Recommendation <small>({esc(kind)})</small>"),
             _tag("p", esc(summary.get("recommendation_reason") or ""), "ld-note")]
    if table:
        parts.append(_tag("pre", "\n".join(esc(line) for line in table)))
    if paste:
        parts += [_tag("p", "Paste this as your total loss:" if kind == "reweight" else "", "ld-note"),
                  _tag("pre", esc(paste), "ld-paste")]
    if rest:
        parts.append(_tag("pre", "\n".join(esc(line) for line in rest)))
    return "".join(parts) + _candidate(summary)


def _candidate(summary: dict) -> str:
    """Weights that no run verified (a Monitor's): shown as a candidate to verify, never as a line to paste."""
    candidate = summary.get("candidate_weights")
    if not candidate:
        return ""
    weights = ", ".join(f"{t}={number(w, 3)}" for t, w in candidate.items())
    return (_tag("h3", "Candidate weights <small>(not verified)</small>") + _tag("pre", esc(weights))
            + _tag("p", f"Verify them by runs from the same start before training with them: "
                        f"{esc(summary.get('verify_with') or 'lossdiag profile --weights')}.", "ld-note"))


def _findings(summary: dict) -> str:
    findings = sorted(summary["findings"], key=lambda f: SEVERITY_ORDER.get(f["severity"], 3))
    if not findings:
        return _tag("h2", "Findings") + _tag("p", "No findings: nothing to fix.")
    items = []
    for finding in findings:
        severity = str(finding["severity"])
        terms = ", ".join(f"<code>{esc(term_text(t))}</code>" for t in finding.get("terms", []))
        value, threshold = finding.get("value"), finding.get("threshold")
        measured = (_tag("p", f"measured {esc(number(value))} · threshold {esc(number(threshold))}", "ld-note")
                    if value is not None or threshold is not None else "")
        items.append(f'<li class="ld-{esc(severity)}"><p><span class="ld-badge">{esc(severity)}</span> '
                     f"<code>{esc(finding['code'])}</code> {terms}</p>{_tag('p', esc(finding['message']))}"
                     f"{measured}"
                     f"<p><strong>What to do:</strong> {esc(finding.get('advice', ''))}</p></li>")
    return _tag("h2", f"Findings ({len(findings)})") + _tag("ol", "".join(items), "ld-findings")


def _per_term(summary: dict) -> str:
    checks = {c.get("term"): c.get("status") for c in summary.get("checks") or []}
    header = ["term", "weight", "loss first → last", "grad norm", "weighted", "share", "recommended weight"]
    header += ["single-term check"] if checks else []
    rows = []
    for term in summary["terms"]:
        row = summary["per_term"][term]
        cells = [esc(term_text(term)), esc(number(row["weight"])),
                 f"{esc(number(row['loss_first']))} → {esc(number(row['loss_last']))}",
                 esc(number(row["grad_norm"])), esc(number(row["weighted_grad_norm"])),
                 esc(number(row["share"], 3)), esc(number(row.get("recommended_weight"), 3))]
        rows.append(cells + ([esc(checks.get(term) or "-")] if checks else []))
    note = (f"share: of the weighted gradient on the shared parameters (median over recorded steps); dominance "
            f"threshold {esc(number(summary['dominance_threshold']))}. Grad norms are unweighted, on the shared "
            f"parameters.")
    parts = [_tag("h2", "Per term"), _table(header, rows), _tag("p", note, "ld-note")]
    if summary["conflict"]:
        pairs = [[f"{esc(term_text(p['terms'][0]))} vs {esc(term_text(p['terms'][1]))}",
                  esc(number(p["cosine_median"], 3)),
                  esc(number(None if p["negative_fraction"] is None else 100 * p["negative_fraction"], 3)) + "%"]
                 for p in summary["conflict"]]
        parts += [_table(["pair", "median cosine", "negative on"], pairs),
                  _tag("p", f"conflict threshold: median cosine below {esc(number(summary['conflict_threshold']))}",
                       "ld-note")]
    return "".join(parts)


def _figures(figures: Sequence[Any]) -> str:
    parts = [_tag("h2", "Figures")]
    for figure in figures:
        if figure.png is None:
            parts.append(_tag("p", f"<strong>{esc(figure.title)}:</strong> not drawn ({esc(figure.note)}).",
                              "ld-note"))
            continue
        data = base64.b64encode(figure.png).decode("ascii")
        parts.append(f'<figure id="ld-{esc(figure.name)}"><img src="data:image/png;base64,{data}" '
                     f'alt="{esc(figure.title)}: {esc(figure.caption)}">'
                     f"<figcaption><strong>{esc(figure.title)}.</strong> {esc(figure.caption)}</figcaption></figure>")
    return "".join(parts)


def _config(diagnosis: Diagnosis, summary: dict, collapsed: bool) -> str:
    rows = [[esc(key), esc(json.dumps(value) if isinstance(value, (dict, list)) else value)]
            for key, value in summary["config"].items()]
    recorded = diagnosis.run.meta.get("lossdiag_version")
    rendered_by = summary["lossdiag_version"]
    versions = (f"lossdiag {esc(rendered_by)}"
                + (f" (recorded with {esc(recorded)})" if recorded and recorded != rendered_by else "")
                + f" · torch {esc(summary.get('torch_version') or 'unknown')}")
    content = _table(["option", "value"], rows, text_columns=2) + _tag("p", versions, "ld-note")
    if collapsed:
        return f"<details><summary>Configuration and versions</summary>{content}</details>"
    return _tag("h2", "Configuration") + content


def _body(diagnosis: Diagnosis, summary: dict, figures: Sequence[Any], collapsed: bool) -> str:
    return "".join([_header(diagnosis, summary), _verdict(summary), _recommendation(summary), _findings(summary),
                    _per_term(summary), _figures(figures), _config(diagnosis, summary, collapsed)])


def _rendered(diagnosis: Diagnosis, summary: dict, figures: Optional[Sequence[Any]]) -> Sequence[Any]:
    if figures is not None:
        return figures
    from lossdiag.report.figures import report_figures

    return report_figures(diagnosis, summary)


def page(diagnosis: Diagnosis, summary: dict, figures: Optional[Sequence[Any]] = None) -> str:
    """The whole report.html: verdict, recommendation, findings, per-term table, figures, configuration and versions.

    A content security policy forbids every script and fetch, as a second wall behind the escaping.
    """
    body = _body(diagnosis, summary, _rendered(diagnosis, summary, figures), collapsed=False)
    return document(f"lossdiag: {summary['status']} · {summary.get('source') or ''}", body)


def fragment(diagnosis: Diagnosis, summary: dict, figures: Optional[Sequence[Any]] = None) -> str:
    """The report as an inline fragment for a notebook: scoped CSS, no iframe, configuration folded away."""
    return inline(_body(diagnosis, summary, _rendered(diagnosis, summary, figures), collapsed=True))


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
