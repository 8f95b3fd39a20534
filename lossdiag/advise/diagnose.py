"""From records to a diagnosis: run every analyser and collect the findings, with no I/O."""
from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np

from lossdiag.advise.recommend import Recommendation, recommend
from lossdiag.analyse.conflict import PairConflict, conflicts, cosine_matrix
from lossdiag.analyse.dominance import Dominance, dominance
from lossdiag.analyse.run import RunData, parse
from lossdiag.analyse.suggest import AlphaCurve, Suggestion, alpha_curve, suggest
from lossdiag.checks.situations import NEEDS_OTHERS, STARVED
from lossdiag.checks import TermProgress, balance_view, check_findings, progress, sanity_findings, situation_findings
from lossdiag.config import FIELDS, Config, resolve
from lossdiag.errors import SpecError
from lossdiag.checks.findings import Finding, Severity, conflict_findings, dominance_findings, sort_findings

PROFILE, CHECK = "profile", "check"


@dataclasses.dataclass(frozen=True)
class Diagnosis:
    """Everything the summary, the terminal and the report render."""

    run: RunData
    config: Config
    dominance: Dominance
    conflicts: list[PairConflict]
    cosines: np.ndarray
    suggestion: Suggestion
    alpha_curve: Optional[AlphaCurve]
    findings: list[Finding]
    progress: tuple[TermProgress, ...] = ()
    recommendation: Optional[Recommendation] = None

    @property
    def purpose(self) -> str:
        """'profile', or 'check' for a run of `lossdiag check` (sanity and single-term checks only)."""
        return str(self.run.meta.get("purpose", PROFILE))

    @property
    def checks(self) -> list[dict]:
        """The single-term check records, one per term, in the model's order."""
        return list(self.run.extra.get("check", []))

    @property
    def status(self) -> str:
        severities = {f.severity for f in self.findings}
        return (Severity.ERROR if Severity.ERROR in severities else Severity.WARNING if Severity.WARNING in severities
                else "ok")

    @property
    def current_weights(self) -> dict[str, float]:
        return dict(self.run.meta.get("weights", {}))


def config_of(run: RunData) -> Config:
    """The configuration the run was recorded with; keys another version wrote and this one lacks, and values
    that do not pass this version's checks (a damaged or crafted file), are left at their defaults."""
    config = Config()
    for key, value in run.config.items():
        if key in FIELDS and value is not None:
            try:
                config = resolve({key: value}, config)
            except SpecError:
                continue
    return config


def diagnose(records: Sequence[dict], torn: bool = False) -> Diagnosis:
    """Analyse a run's records: dominance, conflict, the suggestion, the checks and the findings they produce.

    Terms whose gradient is broken (no path, always zero) are left out of the balance; a `check` run reports
    only the sanity and single-term findings.
    """
    run = parse(records, torn)
    config = config_of(run)
    balanced = balance_view(run)
    current = {t: float(run.meta["weights"].get(t, 1.0)) for t in run.terms}
    shares = dominance(balanced, config.dominance_threshold)
    pairs = conflicts(balanced)
    suggestion = suggest(balanced, shares, pairs, config.conflict_cosine, current)
    refined = run.extra.get("refine")
    if refined:
        suggestion = dataclasses.replace(suggestion, weights=dict(refined[-1]["suggested"]),
                                         alpha=refined[-1]["suggested"][run.terms[0]]
                                         if suggestion.alpha is not None else None)
    if run.meta.get("purpose", PROFILE) == CHECK:
        return Diagnosis(run, config, shares, pairs, cosine_matrix(run.terms, pairs), suggestion, None,
                         sort_findings(sanity_findings(run) + check_findings(run, config)))
    advice = recommend(balanced, config, shares.shares, shares.dominant_term)
    found = advice.situations
    term_progress = tuple(progress(run, found))
    judged = bool(found) and bool(run.extra.get("check"))
    starved = [t for t, s in found.items() if s.name == STARVED]
    needs_others = [t for t, s in found.items() if s.name == NEEDS_OTHERS]
    steps = int(run.extra["progress"][-1]["steps"]) if run.extra.get("progress") else 0
    findings = (dominance_findings(shares, judged, starved) + conflict_findings(pairs, config.conflict_cosine)
                + sanity_findings(run) + check_findings(run, config, needs_others)
                + situation_findings(found, advice.on, steps, config))
    return Diagnosis(run, config, shares, pairs, cosine_matrix(run.terms, pairs), suggestion,
                     alpha_curve(balanced, suggestion.alpha), sort_findings(findings), term_progress, advice)
