"""Findings: a code, a severity, the terms concerned, what was measured against which threshold, what to do."""
from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

from lossdiag.analyse.conflict import PairConflict
from lossdiag.analyse.dominance import Dominance
from lossdiag.record.kinds import TextEnum



class Severity(TextEnum):
    """How much a finding matters: an error fails the run (exit 1), a warning fails it under --strict."""

    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


SEVERITY_ORDER = {Severity.ERROR: 0, Severity.WARNING: 1, Severity.INFO: 2}


@dataclasses.dataclass(frozen=True)
class Finding:
    """One diagnosis; `value` and `threshold` are the numbers the rule compared."""

    code: str
    severity: Severity
    terms: list[str]
    message: str
    advice: str
    value: Optional[float] = None
    threshold: Optional[float] = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def sort_findings(findings: list[Finding]) -> list[Finding]:
    """Errors first, then warnings, then information; stable within a severity."""
    return sorted(findings, key=lambda f: SEVERITY_ORDER.get(f.severity, 3))


def dominance_findings(result: Dominance, judged: bool = False, starved: Sequence[str] = ()) -> list[Finding]:
    """`dominant-term` when one term's share of the weighted shared gradient is past the threshold, judged by outcome.

    A warning when a term it dominates is starved, or when no outcome was measured (`judged` is False); information
    when the checks show no term starved: dominance by design (an auxiliary head, a main loss) is not a fault.
    """
    if result.dominant_term is None:
        return []
    term = result.dominant_term
    share = result.shares[term]
    figure = f"'{term}' holds {share:.3f} of the weighted gradient on the shared parameters (threshold {result.threshold:g})"
    dominated = [t for t in starved if t != term]
    if judged and not dominated:
        return [Finding("dominant-term", Severity.INFO, [term], f"{figure}; no term is starved, so this is dominance by design",
                        "nothing to do: the weights serve every term", share, result.threshold)]
    why = (f"; {', '.join(repr(t) for t in dominated)} {'is' if len(dominated) == 1 else 'are'} starved" if dominated
           else "; the checks did not run, so whether another term is starved is unknown")
    advice = ("train with the recommended weights below, then profile again with them (--weights) to confirm"
              if judged else "verify the candidate weights by runs from the same start before training with them")
    return [Finding("dominant-term", Severity.WARNING, [term], figure + why, advice, share, result.threshold)]


def conflict_findings(pairs: list[PairConflict], conflict_cosine: float) -> list[Finding]:
    """`gradient-conflict` for each pair whose median cosine is below the negative threshold."""
    found = []
    for pair in pairs:
        if pair.cosine_median < conflict_cosine:
            a, b = pair.terms
            found.append(Finding(
                "gradient-conflict", Severity.WARNING, [a, b],
                f"'{a}' and '{b}' pull the shared parameters in opposite directions: median cosine "
                f"{pair.cosine_median:.3f} (threshold {conflict_cosine:g}), negative on "
                f"{pair.negative_fraction:.0%} of recorded steps",
                "no weight balances opposed terms: choose the trade-off by the metric that matters "
                "(sweep alpha around the suggestion and compare on held-out data)",
                pair.cosine_median, conflict_cosine))
    return found
