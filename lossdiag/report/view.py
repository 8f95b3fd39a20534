"""The report as plain objects, built once from a run's summary (and its diagnosis, when the page needs the run's
own context): the header, the verdict, the per-term table, the findings with their thresholds, the single-term
checks, the conflict and the recommendation. The terminal and the HTML page render these same objects."""
from __future__ import annotations

import dataclasses
from typing import Optional

from lossdiag.advise.diagnose import Diagnosis
from lossdiag.checks.findings import SEVERITY_ORDER
from lossdiag.report.advice_view import Recommendation, recommendation
from lossdiag.report.blocks import Block, Table
from lossdiag.report.text import listing, number, option_rows, percent, quoted_term, readable_drop, safe, term_text


@dataclasses.dataclass(frozen=True)
class Header:
    """What was run: where from, how many steps and terms, the shared parameters, and what went wrong with it."""

    version: str
    source: str
    monitor: bool
    steps: int
    recorded_steps: int
    terms: int
    shared_count: int
    shared_numel: int
    shared_modules: str
    check_steps: Optional[int]
    ended_early: bool
    last_step: Optional[int]
    planned_steps: Optional[int]
    torn: bool
    repairs: tuple[str, ...]
    scope: str
    scope_note: Optional[str]


@dataclasses.dataclass(frozen=True)
class Finding:
    """One finding: severity, code, the terms it names, what was measured against which threshold, what to do."""

    severity: str
    code: str
    terms: tuple[str, ...]
    message: str
    measured: Optional[str]
    advice: str


@dataclasses.dataclass(frozen=True)
class Conflict:
    """One pair of terms on the shared parameters: their median gradient cosine and how often it was negative."""

    pair: str
    cosine: str
    negative: str


@dataclasses.dataclass(frozen=True)
class ReportView:
    """Everything a report shows, in reading order, as text cells no renderer has escaped yet."""

    purpose: str
    header: Header
    status: str
    verdict: str
    per_term: Block
    findings: tuple[Finding, ...]
    checks: Optional[Block]
    skipped: tuple[str, ...]
    conflict_threshold: str
    conflicts: tuple[Conflict, ...]
    recommendation: Optional[Recommendation]
    config: tuple[tuple[str, str], ...]
    versions: str


def _header(summary: dict, diagnosis: Optional[Diagnosis]) -> Header:
    shared = summary.get("shared_parameters") or {"count": 0, "numel": 0}
    run = diagnosis.run if diagnosis is not None else None
    monitor = summary.get("source") == "monitor"
    last = int(run.loss_steps[-1]) if run is not None and len(run.loss_steps) else None
    planned = run.config.get("steps") if run is not None and not monitor else None
    return Header(str(summary["lossdiag_version"]), str(summary.get("source") or ""), monitor, summary["steps"],
                  summary.get("recorded_steps", 0), len(summary["terms"]), shared["count"], shared["numel"],
                  listing(summary.get("shared_modules", [])), summary.get("config", {}).get("check_steps"),
                  bool(summary.get("ended_early")), last, planned if isinstance(planned, int) else None,
                  bool(run is not None and run.torn), tuple(summary.get("record_repairs", [])),
                  summary.get("scope", "all"), summary.get("scope_note") if summary.get("scope_proxy") else None)


def _per_term(summary: dict) -> Block:
    rows = []
    for term in summary["terms"]:
        row = summary["per_term"][term]
        losses = f"{number(row['loss_first'])} -> {number(row['loss_last'])}"
        rows.append((term_text(term), number(row["weight"]), losses, number(row["grad_norm"]),
                     number(row["weighted_grad_norm"]), number(row["share"], 3),
                     number(row.get("recommended_weight"), 3)))
    header = ("term", "weight", "loss first -> last", "grad norm", "weighted", "share", "recommended")
    note = (f"share: of the weighted gradient on shared parameters, median over the recorded steps; dominance "
            f"threshold {number(summary.get('dominance_threshold'))}; grad norms are unweighted, on the shared "
            f"parameters")
    return Block("", Table(header, tuple(rows)), (note,))


def _findings(summary: dict) -> tuple[Finding, ...]:
    """The findings, errors first, each with what was measured against its threshold."""
    findings = sorted(summary["findings"], key=lambda f: SEVERITY_ORDER.get(f["severity"], 3))
    views = []
    for finding in findings:
        value, threshold = finding.get("value"), finding.get("threshold")
        measured = (f"measured {number(value)} · threshold {number(threshold)}"
                    if value is not None or threshold is not None else None)
        views.append(Finding(str(finding["severity"]), str(finding["code"]),
                             tuple(term_text(t) for t in finding.get("terms", [])), str(finding["message"]),
                             measured, str(finding.get("advice", ""))))
    return tuple(views)


def _checks(summary: dict) -> Optional[Block]:
    """The single-term checks: per term status, smoothed start -> end, drop alone (and combined), and the rules."""
    checks = summary.get("checks") or []
    if not checks:
        return None
    config = summary.get("config", {})
    combined = any(c.get("combined_relative_drop") is not None for c in checks)
    rows = []
    for check in checks:
        status = f"{check['status']} ({check['code']})" if check.get("code") else check["status"]
        row = [term_text(check["term"]), status, f"{number(check['loss_start'])} -> {number(check['loss_end'])}",
               readable_drop(check["relative_drop"])]
        if combined:
            situation = (summary.get("situations") or {}).get(check["term"]) or {}
            row += [number(situation.get("combined")), readable_drop(check.get("combined_relative_drop")),
                    safe(situation.get("name") or "")]
        rows.append(tuple(row))
    header = ("term", "check", "loss start -> end", "drop alone") + (
        ("end combined", "drop combined", "situation") if combined else ())
    on = (summary.get("outcome") or {}).get("on", "probe")
    count = checks[0].get("probe_batches") or config.get("probe_batches")
    z, min_drop = number(config.get("check_noise_z")), percent(config.get("check_min_drop"))
    intro = (f"single-term checks: each term trained alone (weight 1) from the run's start for "
             f"{config.get('check_steps')} steps; start and end: its mean on {count} {on} batches fixed at the start")
    notes = [f"pass: a drop beyond {z} noise standard errors (below {min_drop}: slow); not-decreasing: a drop of "
             f"{min_drop} ruled out by the noise; diverging: a rise of {percent(config.get('check_max_rise'))} or "
             f"more beyond the noise"]
    if combined:
        notes.append(f"situation, from the end losses after as many steps under the weights in force (clearly: beyond "
                     f"{z} noise standard errors): starved: goes down alone, ends clearly worse combined and makes at "
                     f"most {number(config.get('starved_ratio'))} of its alone gain; behind: ends clearly worse "
                     f"combined than alone; opposed: ends clearly above its start combined; needs-others: goes down "
                     f"only combined; stalled: neither")
    return Block(intro, Table(header, tuple(rows)), tuple(notes))


def _conflicts(summary: dict) -> tuple[Conflict, ...]:
    return tuple(Conflict(f"{term_text(p['terms'][0])} vs {term_text(p['terms'][1])}", number(p["cosine_median"], 3),
                          percent(p["negative_fraction"]))
                 for p in summary.get("conflict") or [])


def _config(summary: dict, diagnosis: Optional[Diagnosis]) -> tuple[tuple[tuple[str, str], ...], str]:
    rows = option_rows(summary.get("config", {}))
    recorded = diagnosis.run.meta.get("lossdiag_version") if diagnosis is not None else None
    rendered_by = summary["lossdiag_version"]
    versions = (f"lossdiag {rendered_by}" + (f" (recorded with {recorded})" if recorded and recorded != rendered_by
                                              else "")
                + f" · torch {summary.get('torch_version') or 'unknown'}")
    return rows, versions


def build_view(summary: dict, model_path: Optional[str] = None, diagnosis: Optional[Diagnosis] = None) -> ReportView:
    """The report of a profile's or a check's summary; `model_path` adds the commands that check the advice,
    `diagnosis` the run's own context (its last step, the steps planned, a torn last line, the recording version)."""
    checks = summary.get("checks") or []
    config, versions = _config(summary, diagnosis)
    return ReportView(
        "check" if summary.get("purpose") == "check" else "profile", _header(summary, diagnosis), summary["status"],
        str(summary["verdict"]), _per_term(summary), _findings(summary), _checks(summary),
        tuple(f"{quoted_term(c['term'])} skipped: {c['reason']}" for c in checks if c["status"] == "skipped"),
        number(summary.get("conflict_threshold")), _conflicts(summary), recommendation(summary, model_path),
        config, versions)
