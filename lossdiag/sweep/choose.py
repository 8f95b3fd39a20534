"""Which sweep point to recommend: the one --metric prefers, else the one the profile's rule prefers over the
weights in force (lossdiag.advise.rule), or the weights in force when no point qualifies.

Plain functions over plain data: each point's end losses on the evaluation batches, its metrics, and each term's
end trained alone for as many steps.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Optional, Sequence

from lossdiag.analyse.outcome import RunEnd
from lossdiag.advise.rule import bound_text, judge
from lossdiag.config import Config

MAX_SUFFIX = "_max"


def higher_is_better(metric: str) -> bool:
    """A metric is minimised unless its name ends in '_max' (CONTRACT section 1)."""
    return metric.endswith(MAX_SUFFIX)


def _finite(value: Optional[float]) -> bool:
    return value is not None and math.isfinite(value)


def pareto(progress: Sequence[Mapping[str, Optional[float]]], terms: Sequence[str]) -> list[int]:
    """Indices of the points no other point beats on every term's progress (higher is better), in order.

    A point with a missing or non-finite progress is on no front.
    """
    usable = [k for k, p in enumerate(progress) if all(_finite(p.get(t)) for t in terms)]
    front = []
    for k in usable:
        mine = [progress[k][t] for t in terms]
        beaten = any(all(o >= m for o, m in zip(other, mine)) and other != mine
                     for other in ([progress[j][t] for t in terms] for j in usable if j != k))
        if not beaten:
            front.append(k)
    return front


@dataclasses.dataclass(frozen=True)
class Choice:
    """The recommended point (None when no point qualifies), each point's score, and the rule in words."""

    index: Optional[int]
    scores: list[Optional[float]]
    criterion: str
    kept: bool = False


def by_rule(points: Sequence[Mapping], alone: Mapping[str, Sequence[Mapping[str, float]]],
            start: Sequence[Mapping[str, float]], terms: Sequence[str], config: Config) -> Choice:
    """Without --metric: the one rule of the profile (lossdiag.advise.rule) over the points, each against the
    point under the weights in force on each term's end loss; the weights in force when no point qualifies.

    A point's score is how much better it serves all terms than the weights in force (the sum of log end-loss
    ratios), None where it cannot be compared.
    """
    current = next((k for k, p in enumerate(points) if p.get("current") and p.get("end_batches")), None)
    rule = (f"the one rule, on each term's loss at the end against the weights in force: a point must make a term "
            f"clearly better by {config.min_gain:.0%} or more while no other term's end loss rises by more than "
            f"{bound_text(config.max_cost)}"
            + (f" and main {', '.join(config.main)} pays nothing" if config.main else "")
            + "; of those, the one that serves all terms best, the cheapest among near ties")
    if current is None or not start:
        return Choice(None, [None] * len(points), rule + "; the point under the weights in force is missing")
    others = [k for k, p in enumerate(points) if k != current and p.get("end_batches")]
    in_force = RunEnd(dict(points[current]["weights"]), [dict(b) for b in points[current]["end_batches"]])
    judged = judge(terms, [dict(b) for b in start], in_force,
                   {t: RunEnd({t: 1.0}, [dict(b) for b in ends]) for t, ends in alone.items() if ends},
                   [RunEnd(dict(points[k]["weights"]), [dict(b) for b in points[k]["end_batches"]]) for k in others],
                   config.main or [], config)
    scores: list[Optional[float]] = [None] * len(points)
    scores[current] = 0.0
    for k, assessment in zip(others, judged.assessments):
        scores[k] = assessment.value
    if judged.chosen is None:
        return Choice(current, scores, rule + "; no point qualifies, so the weights in force are kept", kept=True)
    return Choice(others[judged.chosen], scores, rule)


def by_metric(metrics: Sequence[Mapping[str, Optional[float]]], metric: str) -> Choice:
    """The point with the best `metric`: the lowest, or the highest when its name ends in '_max'."""
    higher = higher_is_better(metric)
    scores = [m.get(metric) if _finite(m.get(metric)) else None for m in metrics]
    rule = f"the {'highest' if higher else 'lowest'} {metric} from validate(model)"
    return Choice(_best(scores, higher), scores, rule)


def _best(scores: Sequence[Optional[float]], higher: bool) -> Optional[int]:
    """Index of the best finite score (the first on ties), None when there is none."""
    usable = [(s if higher else -s, -k) for k, s in enumerate(scores) if s is not None]
    return -max(usable)[1] if usable else None
