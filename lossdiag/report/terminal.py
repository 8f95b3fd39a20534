"""The terminal summary, read top-down: verdict, per-term table, findings, checks, conflict, the recommendation.

It renders the report's view objects (report/view.py) as lines; the HTML page renders the same objects.
"""
from __future__ import annotations

from typing import Optional

from lossdiag.report.advice_view import Recommendation
from lossdiag.report.blocks import Block
from lossdiag.report.text import aligned, plain
from lossdiag.report.view import ReportView, build_view


def block_lines(block: Block) -> list[str]:
    """A block as text: its intro, its table aligned in columns, its notes."""
    return [*([block.intro] if block.intro else []), *aligned(block.table.header, block.table.rows), *block.notes]


def recommendation_lines(advice: Optional[Recommendation]) -> list[str]:
    """The recommendation: the candidates' outcome, a candidate to verify, the weights in force against the
    recommended ones, and for a reweight the line to paste and what qualifies it."""
    if advice is None:
        return []
    lines = ["", f"recommendation: {advice.kind} ({advice.reason})"]
    lines += block_lines(advice.outcome) if advice.outcome else []
    if advice.candidate is not None:
        lines.append(f"  candidate (not verified): {advice.candidate.weights}")
        if advice.candidate.check_command:
            lines.append(f"  check it: {advice.candidate.check_command}")
    lines += block_lines(advice.comparison) if advice.comparison else []
    if advice.sweep_command:
        lines.append(f"  sweep it: {advice.sweep_command}")
    if advice.paste:
        lines.append(f"  {advice.paste}")
    return lines + [f"  {note}" for note in advice.notes]


def findings_lines(view: ReportView) -> list[str]:
    """Each finding with its severity, code, message (figures and threshold) and what to do."""
    if not view.findings:
        return []
    lines = ["", "findings"]
    for finding in view.findings:
        lines.append(f"  {finding.severity:8} {finding.code:18} {finding.message}")
        lines.append(f"  {'':8} {'':18} what to do: {finding.advice}")
    return lines


def checks_lines(view: ReportView) -> list[str]:
    """The single-term checks table, its rules and the terms skipped."""
    if view.checks is None:
        return []
    return ["", *block_lines(view.checks), *(f"  {line}" for line in view.skipped)]


def conflict_lines(view: ReportView) -> list[str]:
    """Each pair's median cosine on the shared parameters and how often it was negative."""
    if not view.conflicts:
        return []
    return ["", f"conflict (median cosine of gradients on shared parameters; threshold {view.conflict_threshold})",
            *(f"  {c.pair}: cosine {c.cosine}, negative on {c.negative} of steps" for c in view.conflicts)]


def _head(view: ReportView) -> list[str]:
    head = view.header
    if view.purpose == "check":
        return [f"lossdiag {head.version} · {head.source} · check: {head.steps} steps of gradient sanity, "
                f"{head.check_steps} steps per term alone · {head.terms} terms"]
    return [f"lossdiag {head.version} · {head.source} · {head.steps} steps ({head.recorded_steps} recorded) · "
            f"{head.terms} terms · {head.shared_count} shared parameters ({head.shared_numel:,} values)",
            f"shared modules: {head.shared_modules}"]


def _run_notes(view: ReportView) -> list[str]:
    head = view.header
    return [*([f"measured on a {head.scope_note}"] if head.scope_note else []),
            *([f"the run ended early (killed or crashed): this covers the {head.steps} steps it recorded"]
              if head.ended_early else []),
            *(f"damaged records: {repair}" for repair in head.repairs)]


def render_view(view: ReportView, out: Optional[str] = None) -> str:
    """A report's view as terminal text; a check's shows its findings and single-term checks only."""
    lines = [*_head(view), "", f"{view.status.upper()}: {view.verdict}"]
    if view.purpose == "check":
        lines += findings_lines(view) + checks_lines(view)
    else:
        lines += [*_run_notes(view), "", *block_lines(view.per_term)]
        lines += findings_lines(view) + checks_lines(view) + conflict_lines(view)
        lines += recommendation_lines(view.recommendation)
    if out:
        lines += ["", f"outputs in {out}/"]
    return plain(lines)


def render(summary: dict, model_path: Optional[str] = None, out: Optional[str] = None) -> str:
    """The whole human summary of a profile's or a check's summary as text."""
    return render_view(build_view(summary, model_path), out)
