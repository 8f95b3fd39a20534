"""report.html: the report's view objects (report/view.py) as one self-contained page, the same objects the
terminal renders, and the same page as an inline fragment with scoped CSS for Jupyter's `_repr_html_`."""
from __future__ import annotations

from typing import Optional, Sequence

from lossdiag.advise.diagnose import Diagnosis
from lossdiag.report.advice_view import Recommendation
from lossdiag.report.blocks import Block
from lossdiag.report.figures import ReportFigure, report_figures
from lossdiag.report.page import document, esc, figures_section, inline, table, tag
from lossdiag.report.view import ReportView, build_view


def block_html(block: Block) -> str:
    """A block as a paragraph, a table and its notes, every cell escaped."""
    rows = [[esc(cell) for cell in row] for row in block.table.rows]
    return ((tag("p", esc(block.intro), "ld-note") if block.intro else "")
            + table([esc(h) for h in block.table.header], rows, block.table.text_columns)
            + "".join(tag("p", esc(note), "ld-note") for note in block.notes))


def _header(view: ReportView) -> str:
    head = view.header
    origin = "recorded in the training loop by lossdiag.Monitor" if head.monitor else esc(head.source)
    meta = (f"{origin} · {esc(head.steps)} steps ({esc(head.recorded_steps)} with gradients recorded) · "
            f"{head.terms} terms · {esc(head.shared_count)} shared parameters ({esc(format(head.shared_numel, ','))} "
            f"values)")
    return tag("h1", "lossdiag report") + tag("p", meta, "ld-meta") + "".join(
        tag("p", note, "ld-banner") for note in _banners(view))


def _banners(view: ReportView) -> list[str]:
    """Warnings about the run itself: it ended early, its last line was torn, its gradients are a proxy."""
    head = view.header
    notes = []
    if head.ended_early:
        last = f"step {head.last_step}" if head.last_step is not None else "its header"
        of = f" of {esc(head.planned_steps)} planned" if head.planned_steps is not None else ""
        torn = " Its last line was cut in the middle and was skipped." if head.torn else ""
        notes.append(f"<strong>This run ended early:</strong> its records stop at {last}{of}, with no end record "
                     f"(killed, crashed or still running). Everything below covers what was recorded.{torn}")
    notes += [f"<strong>Damaged records:</strong> {esc(repair)}." for repair in head.repairs]
    if head.scope != "all":
        notes.append(f"<strong>Proxy scope '{esc(head.scope)}':</strong> gradients were measured on a proxy, not on "
                     "every shared parameter; shares, cosines and the suggestion describe that proxy and can "
                     "differ from the full shared parameters.")
    return notes


def _verdict(view: ReportView) -> str:
    return (f'<section class="ld-verdict ld-{esc(view.status)}"><span class="ld-badge">{esc(view.status)}</span>'
            f"{tag('p', esc(view.verdict))}</section>")


def _recommendation(advice: Optional[Recommendation]) -> str:
    """The outcome of each candidate, the weights in force against the recommended ones, the line to paste, the
    notes that qualify it, and a candidate no run verified."""
    if advice is None:
        return ""
    parts = [tag("h2", f"Recommendation <small>({esc(advice.kind)})</small>"), tag("p", esc(advice.reason), "ld-note")]
    parts += [block_html(block) for block in (advice.outcome, advice.comparison) if block is not None]
    if advice.sweep_command:
        parts.append(tag("p", "Choose by your metric:", "ld-note") + tag("pre", esc(advice.sweep_command)))
    if advice.paste:
        parts += [tag("p", "Paste this as your total loss:", "ld-note"), tag("pre", esc(advice.paste), "ld-paste")]
    if advice.notes:
        parts.append(tag("pre", "\n".join(esc(note) for note in advice.notes)))
    candidate = advice.candidate
    if candidate is not None:
        parts += [tag("h2", "Candidate weights <small>(not verified)</small>"), tag("pre", esc(candidate.weights)),
                  tag("p", f"Verify them by runs from the same start before training with them: "
                           f"{esc(candidate.verify_with)}.", "ld-note")]
    return "".join(parts)


def _findings(view: ReportView) -> str:
    if not view.findings:
        return tag("h2", "Findings") + tag("p", "No findings: nothing to fix.")
    items = []
    for finding in view.findings:
        terms = ", ".join(f"<code>{esc(term)}</code>" for term in finding.terms)
        measured = tag("p", esc(finding.measured), "ld-note") if finding.measured else ""
        items.append(f'<li class="ld-{esc(finding.severity)}"><p><span class="ld-badge">{esc(finding.severity)}'
                     f"</span> <code>{esc(finding.code)}</code> {terms}</p>{tag('p', esc(finding.message))}"
                     f"{measured}<p><strong>What to do:</strong> {esc(finding.advice)}</p></li>")
    return tag("h2", f"Findings ({len(view.findings)})") + tag("ol", "".join(items), "ld-findings")


def _per_term(view: ReportView) -> str:
    parts = [tag("h2", "Per term"), block_html(view.per_term)]
    if view.conflicts:
        pairs = [[esc(c.pair), esc(c.cosine), esc(c.negative)] for c in view.conflicts]
        parts += [table(["pair", "median cosine", "negative on"], pairs),
                  tag("p", f"conflict threshold: median cosine below {esc(view.conflict_threshold)}", "ld-note")]
    if view.checks is not None:
        parts += [tag("h2", "Single-term checks"), block_html(view.checks)]
        parts += [tag("p", esc(line), "ld-note") for line in view.skipped]
    return "".join(parts)


def _config(view: ReportView, collapsed: bool) -> str:
    rows = [[esc(key), esc(value)] for key, value in view.config]
    content = table(["option", "value"], rows, text_columns=2) + tag("p", esc(view.versions), "ld-note")
    if collapsed:
        return f"<details><summary>Configuration and versions</summary>{content}</details>"
    return tag("h2", "Configuration") + content


def _body(view: ReportView, figures: Sequence[ReportFigure], collapsed: bool) -> str:
    return "".join([_header(view), _verdict(view), _recommendation(view.recommendation), _findings(view),
                    _per_term(view), figures_section(figures), _config(view, collapsed)])


def _view_and_figures(diagnosis: Diagnosis, summary: dict,
                      figures: Optional[Sequence[ReportFigure]]) -> tuple[ReportView, Sequence[ReportFigure]]:
    source = str(summary.get("source") or "")
    view = build_view(summary, source if source.endswith(".py") else None, diagnosis)
    return view, report_figures(diagnosis, summary) if figures is None else figures


def page(diagnosis: Diagnosis, summary: dict, figures: Optional[Sequence[ReportFigure]] = None) -> str:
    """The whole report.html: verdict, recommendation, findings, per-term table, figures, configuration and versions.

    A content security policy forbids every script and fetch, as a second wall behind the escaping.
    """
    view, drawn = _view_and_figures(diagnosis, summary, figures)
    return document(f"lossdiag: {summary['status']} · {summary.get('source') or ''}", _body(view, drawn, False))


def fragment(diagnosis: Diagnosis, summary: dict, figures: Optional[Sequence[ReportFigure]] = None) -> str:
    """The report as an inline fragment for a notebook: scoped CSS, no iframe, configuration folded away."""
    view, drawn = _view_and_figures(diagnosis, summary, figures)
    return inline(_body(view, drawn, True))
