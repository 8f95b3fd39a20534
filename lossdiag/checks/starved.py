"""Starved terms: a term that goes down clearly when trained alone but barely moves under the combined loss."""
from __future__ import annotations

import dataclasses
from typing import Collection, Optional

from lossdiag.analyse.run import RunData
from lossdiag.checks.single_term import MIN_STEPS, PASS, measure
from lossdiag.config import Config
from lossdiag.findings import Finding

ADVICE = ("the other terms drown its gradient: raise its weight (the suggestion below balances the terms), "
          "then profile again with --weights to confirm it moves")


@dataclasses.dataclass(frozen=True)
class TermProgress:
    """One term's relative drop over the same first steps from the same start: alone and under the combined loss."""

    term: str
    steps: int
    alone: Optional[float]
    combined: Optional[float]
    starved: bool
    skipped_updates: int


def progress(run: RunData, config: Config, opposed: Collection[str] = ()) -> list[TermProgress]:
    """Compare each passing single-term check with the profile's first steps, smoothed the same way.

    Only terms on shared parameters can be starved: another term's slower progress comes from features that
    move under it, which no weight changes. Terms in an opposed pair are not starved either: their stall is
    the trade-off the conflict finding reports, and raising a weight would not resolve it. Nor is a term judged
    over steps where the profile applied no update (a non-finite one): the combined run did not train there.
    """
    bad_steps = [s for s, _ in run.nonfinite] + [r["step"] for r in run.extra.get("nonfinite-update", [])]
    found = []
    for record in run.extra.get("check", []):
        term = record["term"]
        if record.get("status") != PASS or term not in run.shared_terms:
            continue
        steps = min(len(record["losses"]), len(run.loss_steps))
        if steps < MIN_STEPS:
            continue
        alone = measure(record["losses"][:steps], config).relative_drop
        combined = measure(run.losses[:steps, run.terms.index(term)].tolist(), config).relative_drop
        skipped = sum(1 for s in bad_steps if s < steps)
        starved = (term not in opposed and not skipped and alone is not None and combined is not None
                   and alone >= config.starved_min_drop and abs(combined) <= config.starved_ratio * alone)
        found.append(TermProgress(term, steps, alone, combined, starved, skipped))
    return found


def starved_findings(results: list[TermProgress], config: Config) -> list[Finding]:
    """`starved` for each term that goes down clearly alone but barely moves combined; both figures in the message."""
    return [Finding(
        "starved", "warning", [r.term],
        f"'{r.term}' goes down {r.alone:.1%} trained alone but {r.combined:.1%} under the combined loss, over the "
        f"same first {r.steps} steps from the same start (starved: combined progress at most "
        f"{config.starved_ratio:g} times an alone progress of at least {config.starved_min_drop:.0%})",
        ADVICE, r.combined / r.alone, config.starved_ratio) for r in results if r.starved]
