"""The candidates a sweep trains: alphas on a logit scale for two terms, each weight scaled up and down for more.

Balance points live on a log scale (FIELD_NOTES: about 5e-4 in the two-output case), so the grid spans a
factor of SPAN_DECADES decades either side of the suggestion in the ratio of the weights, never a linear step.
Every candidate's weights are scaled to the sum of the weights in force, so an SGD learning rate keeps its meaning.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Optional, Sequence

import numpy as np

from lossdiag.errors import SpecError

SPAN_DECADES = 2.0
MIN_POINTS = 3
SAME_LOGIT = 1e-9
SNAP = 0.25


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One point of the sweep: its weights; alpha for two terms; else the term scaled and by what factor.

    `current` marks the weights in force (added when the grid does not hold them, so every sweep shows them).
    """

    weights: dict[str, float]
    alpha: Optional[float] = None
    scaled: Optional[str] = None
    factor: float = 1.0
    current: bool = False

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _scaled_to(weights: Mapping[str, float], total: float) -> dict[str, float]:
    """The weights multiplied so that they sum to `total`."""
    current = sum(weights.values())
    return {name: value * total / current for name, value in weights.items()}


def alpha_of(weights: Mapping[str, float], terms: Sequence[str]) -> float:
    """alpha in alpha * first + (1 - alpha) * second for two terms' weights."""
    first, second = weights[terms[0]], weights[terms[1]]
    return first / (first + second) if first + second > 0 else 0.5


def _logit(alpha: float) -> float:
    alpha = min(max(alpha, 1e-15), 1 - 1e-15)
    return math.log10(alpha / (1 - alpha))


def _alpha_candidates(terms: Sequence[str], centre: float, current: float, total: float,
                      points: int) -> list[Candidate]:
    """Alphas evenly spaced in log10(alpha / (1 - alpha)), centred on the suggestion, plus the current alpha.

    A grid point closer to the current alpha than SNAP of a grid step gives way to it, so no two points coincide.
    """
    logits = _logit(centre) + np.linspace(-SPAN_DECADES, SPAN_DECADES, points)
    nearest = int(np.argmin(np.abs(logits - _logit(current))))
    if abs(logits[nearest] - _logit(current)) < SNAP * (logits[1] - logits[0]):
        logits = np.delete(logits, nearest)
    alphas = sorted([float(1.0 / (1.0 + 10.0 ** -x)) for x in logits] + [current])
    first, second = terms
    return [Candidate({first: a * total, second: (1 - a) * total}, alpha=a,
                      current=abs(_logit(a) - _logit(current)) < SAME_LOGIT) for a in alphas]


def _scaling_candidates(terms: Sequence[str], centre: Mapping[str, float], current: Mapping[str, float],
                        total: float, points: int) -> list[Candidate]:
    """The suggestion, then each term's weight scaled by factors up to 10**SPAN_DECADES up and down."""
    per_side = max(1, (points - 1) // (2 * len(terms)))
    factors = [10.0 ** (SPAN_DECADES * j / per_side) for j in range(1, per_side + 1)]
    found = [Candidate(_scaled_to(centre, total))]
    for term in terms:
        for factor in sorted([1 / f for f in factors] + factors):
            scaled = {name: value * (factor if name == term else 1.0) for name, value in centre.items()}
            found.append(Candidate(_scaled_to(scaled, total), scaled=term, factor=factor))
    mine = _scaled_to(current, total)
    for k, candidate in enumerate(found):
        if all(math.isclose(candidate.weights[t], mine[t], rel_tol=1e-9) for t in terms):
            found[k] = dataclasses.replace(candidate, current=True)
            return found
    return [*found, Candidate(mine, current=True)]


def candidates(terms: Sequence[str], suggested: Mapping[str, float], current: Mapping[str, float],
               points: int) -> list[Candidate]:
    """The sweep's grid around the suggested weights, with the weights in force among the points."""
    if points < MIN_POINTS:
        raise SpecError(f"--points must be at least {MIN_POINTS} (the suggestion and one point either side), "
                        f"got {points}")
    if len(terms) < 2:
        raise SpecError(f"a sweep needs at least two terms, the model has {len(terms)}: {list(terms)}")
    total = sum(current.values())
    if total <= 0:
        raise SpecError("the weights in force sum to 0: give at least one term a positive weight (--weights)")
    if len(terms) == 2:
        return _alpha_candidates(terms, alpha_of(suggested, terms), alpha_of(current, terms), total, points)
    return _scaling_candidates(terms, suggested, current, total, points)
