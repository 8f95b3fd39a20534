"""From records to a diagnosis: run every analyser and collect the findings, with no I/O."""
from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np

from lossdiag.analyse.conflict import PairConflict, conflicts, cosine_matrix
from lossdiag.analyse.dominance import Dominance, dominance
from lossdiag.analyse.run import RunData, parse
from lossdiag.analyse.suggest import AlphaCurve, Suggestion, alpha_curve, suggest
from lossdiag.config import Config, resolve
from lossdiag.findings import Finding, conflict_findings, dominance_findings, sort_findings


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

    @property
    def status(self) -> str:
        severities = {f.severity for f in self.findings}
        return "error" if "error" in severities else "warning" if "warning" in severities else "ok"

    @property
    def current_weights(self) -> dict[str, float]:
        return dict(self.run.meta.get("weights", {}))


def config_of(run: RunData) -> Config:
    """The configuration the run was recorded with, as the header stored it."""
    return resolve({k: v for k, v in run.config.items() if v is not None})


def diagnose(records: Sequence[dict], torn: bool = False) -> Diagnosis:
    """Analyse a run's records: dominance, conflict, the suggestion and the findings they produce."""
    run = parse(records, torn)
    config = config_of(run)
    current = {t: float(run.meta["weights"].get(t, 1.0)) for t in run.terms}
    shares = dominance(run, config.dominance_threshold)
    pairs = conflicts(run)
    suggestion = suggest(run, shares, pairs, config.conflict_cosine, current)
    refined = run.extra.get("refine")
    if refined:
        suggestion = dataclasses.replace(suggestion, weights=dict(refined[-1]["suggested"]),
                                         alpha=refined[-1]["suggested"][run.terms[0]]
                                         if suggestion.alpha is not None else None)
    findings = dominance_findings(shares) + conflict_findings(pairs, config.conflict_cosine)
    return Diagnosis(run, config, shares, pairs, cosine_matrix(run), suggestion,
                     alpha_curve(run, suggestion.alpha), sort_findings(findings))
