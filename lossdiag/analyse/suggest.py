"""The suggestion: starting weights that equalise the weighted gradient norms on shared parameters."""
from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence

import numpy as np

from lossdiag.analyse.conflict import PairConflict
from lossdiag.analyse.dominance import Dominance
from lossdiag.analyse.run import RunData

BALANCE = "balance"
TRADE_OFF = "trade-off"


@dataclasses.dataclass(frozen=True)
class Suggestion:
    """Weights summing to 1; with two terms also alpha, the first term's weight."""

    weights: dict[str, float]
    kind: str
    alpha: Optional[float]
    opposed: list[tuple[str, str]]


def balancing_weights(grad_norms: dict[str, float], terms: Sequence[str],
                      current: dict[str, float]) -> dict[str, float]:
    """Weights proportional to 1 / median gradient norm, normalised to sum to 1.

    Terms with no usable norm (no shared parameters, zero or non-finite gradient) cannot be balanced:
    they get the geometric mean of the others' raw weights, or their current weight if none is usable.
    """
    raw = {t: 1.0 / grad_norms[t] for t in terms
           if math.isfinite(grad_norms.get(t, math.nan)) and grad_norms[t] > 0}
    neutral = math.exp(float(np.mean(np.log(list(raw.values()))))) if raw else None
    for t in current:
        if t not in raw:
            raw[t] = neutral if neutral is not None else abs(current[t]) or 1.0
    total = sum(raw.values())
    return {t: raw[t] / total for t in current}


def suggest(run: RunData, dominance: Dominance, pairs: list[PairConflict], conflict_cosine: float,
            current: dict[str, float]) -> Suggestion:
    """Balance the terms on shared parameters; opposed terms make the suggestion a trade-off."""
    weights = balancing_weights(dominance.grad_norms, run.shared_terms, current)
    opposed = [p.terms for p in pairs if math.isfinite(p.cosine_median) and p.cosine_median < conflict_cosine]
    alpha = weights[run.terms[0]] if len(run.terms) == 2 else None
    return Suggestion(weights, TRADE_OFF if opposed else BALANCE, alpha, opposed)


@dataclasses.dataclass(frozen=True)
class AlphaCurve:
    """Predicted share of the first term for alpha * first + (1 - alpha) * second, over a log grid."""

    alphas: np.ndarray
    first_share: np.ndarray
    suggested_alpha: float
    current_alpha: float


def alpha_curve(run: RunData, suggested_alpha: Optional[float], points: int = 121) -> Optional[AlphaCurve]:
    """The share of the first term each alpha would give, from the recorded norms, without retraining.

    Gradient norms scale linearly with a term's weight, so the share at any alpha follows from the
    Gram diagonal of each recorded step; the median over steps is the prediction.
    """
    if len(run.terms) != 2 or suggested_alpha is None or len(run.shared_terms) != 2 or not len(run.gram):
        return None
    first, second = np.sqrt(run.gram[:, 0, 0]), np.sqrt(run.gram[:, 1, 1])
    usable = np.isfinite(first) & np.isfinite(second) & ((first > 0) | (second > 0))
    if not usable.any():
        return None
    first, second = first[usable], second[usable]
    low = min(-6.0, math.floor(math.log10(max(suggested_alpha, 1e-12))) - 2.0)
    alphas = np.logspace(low, math.log10(0.999), points)
    weighted_first = alphas[:, None] * first[None, :]
    weighted_second = (1 - alphas[:, None]) * second[None, :]
    shares = np.median(weighted_first / (weighted_first + weighted_second), axis=1)
    weights = run.weights[0] if len(run.weights) else np.array([1.0, 1.0])
    current_alpha = float(weights[0] / (weights[0] + weights[1]))
    return AlphaCurve(alphas, shares, float(suggested_alpha), current_alpha)
