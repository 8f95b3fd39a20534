"""Which sweep point to recommend: the one --metric prefers, else the one that leaves no term behind.

Plain functions over plain data: each point's progress per term (relative drop on the probe batches), its
metrics, and each term's progress trained alone for as many steps.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Optional, Sequence

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


def reference_progress(alone: Mapping[str, Optional[float]], progress: Sequence[Mapping[str, Optional[float]]],
                       terms: Sequence[str], min_alone: float) -> tuple[dict[str, float], list[str]]:
    """Each term's yardstick, its progress trained alone, and the terms left out (it does not progress alone).

    Where the alone run is missing (a sweep killed before it finished), the best progress of any point stands in.
    """
    found, left_out = {}, []
    for term in terms:
        value = alone.get(term)
        if not _finite(value):
            seen = [p[term] for p in progress if _finite(p.get(term))]
            value = max(seen) if seen else None
        if _finite(value) and value >= min_alone:
            found[term] = value
        else:
            left_out.append(term)
    return found, left_out


def distance(weights: Mapping[str, float], centre: Mapping[str, float]) -> float:
    """How far weights are from the centre, in decades of their ratios: for two terms |log10 odds - log10 odds'|.

    The spread (largest minus smallest) of log10(weight / centre weight) over the terms, blind to a common scale.
    """
    logs = [math.log10(weights[t] / centre[t]) if weights[t] > 0 and centre[t] > 0 else math.inf for t in centre]
    return max(logs) - min(logs) if all(math.isfinite(v) for v in logs) else math.inf


def by_progress(progress: Sequence[Mapping[str, Optional[float]]], alone: Mapping[str, Optional[float]],
                terms: Sequence[str], min_alone: float, weights: Sequence[Mapping[str, float]],
                centre: Mapping[str, float], tolerance: float) -> Choice:
    """The point whose worst term, as a fraction of that term's progress alone, is best (no term left behind).

    Scores within `tolerance` of the best are a tie (the score is flat where every term is near its alone
    progress), settled by the point nearest the centre (the suggestion): the smallest change that serves.
    """
    reference, left_out = reference_progress(alone, progress, terms, min_alone)
    scores: list[Optional[float]] = []
    for point in progress:
        ratios = [point.get(t) / reference[t] if _finite(point.get(t)) else None for t in reference]
        scores.append(min(ratios) if ratios and None not in ratios else None)
    rule = ("the smallest progress of any term relative to its progress trained alone for as many steps "
            f"(no term left behind); of the points within {tolerance:g} of the best, the nearest the suggestion")
    if left_out:
        rule += (f"; left out: {', '.join(left_out)} (progress alone below {min_alone:g}, "
                 f"so no weight can make it move)")
    best = _best(scores, higher=True)
    if best is None:
        return Choice(None, scores, rule)
    tied = [k for k, s in enumerate(scores) if s is not None and s >= scores[best] - tolerance]
    return Choice(min(tied, key=lambda k: (distance(weights[k], centre), -scores[k])), scores, rule)


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
