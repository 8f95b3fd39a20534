"""Starved terms: a term that goes down clearly when trained alone but barely moves under the combined loss."""
from __future__ import annotations

import dataclasses
from typing import Collection, Optional

from lossdiag.analyse.run import RunData
from lossdiag.checks.single_term import PASS
from lossdiag.config import Config
from lossdiag.findings import Finding

ADVICE = ("the other terms drown its gradient: train with the recommended weights below (verified by a run from "
          "the same start unless --no-verify), then profile again with them (--weights) to confirm")


@dataclasses.dataclass(frozen=True)
class TermProgress:
    """One term's progress on the probe batches after the same steps from the same start: alone and combined."""

    term: str
    steps: int
    alone: Optional[float]
    combined: Optional[float]
    starved: bool
    skipped_updates: int


def progress(run: RunData, config: Config, opposed: Collection[str] = ()) -> list[TermProgress]:
    """Compare each passing single-term check with the same term under the weights in force, on the probe batches.

    Both runs start from the same state and train for the same steps ('progress' record). Only terms on shared
    parameters can be starved: another term's slower progress comes from features that move under it, which no
    weight changes. Terms in an opposed pair are not starved either: their stall is the trade-off the conflict
    finding reports. Nor is a term judged when the combined run skipped an update (a non-finite one).
    """
    combined_runs = run.extra.get("progress", [])
    if not combined_runs:
        return []
    combined_run = combined_runs[-1]
    skipped = int(combined_run.get("skipped_updates", 0))
    found = []
    for record in run.extra.get("check", []):
        term = record["term"]
        if record.get("status") != PASS or term not in run.shared_terms:
            continue
        alone, combined = record.get("relative_drop"), combined_run["progress"].get(term)
        found.append(TermProgress(term, int(combined_run["steps"]), alone, combined,
                                  term not in opposed and not skipped and is_starved(alone, combined, config),
                                  skipped))
    return found


def is_starved(alone: Optional[float], combined: Optional[float], config: Config) -> bool:
    """Goes down clearly alone (at least starved_min_drop) but at most starved_ratio of that when combined."""
    return (alone is not None and combined is not None and alone >= config.starved_min_drop
            and combined <= config.starved_ratio * alone)


def starved_findings(results: list[TermProgress], config: Config) -> list[Finding]:
    """`starved` for each term that goes down clearly alone but barely moves combined; both figures in the message."""
    return [Finding(
        "starved", "warning", [r.term],
        f"'{r.term}' goes down {r.alone:.1%} trained alone but {r.combined:.1%} under the weights in force, on "
        f"the probe batches after the same {r.steps} steps from the same start (starved: combined progress at most "
        f"{config.starved_ratio:g} times an alone progress of at least {config.starved_min_drop:.0%})",
        ADVICE, r.combined / r.alone, config.starved_ratio) for r in results if r.starved]
