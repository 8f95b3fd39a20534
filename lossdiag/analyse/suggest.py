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
    """Predicted share of the first term for alpha * first + (1 - alpha) * second, over a logit grid.

    `first_share` uses the median norms (the estimator behind the shares and the suggestion, so it crosses
    0.5 at the alpha suggested from this run; after --refine the marked alpha comes from the last round);
    `first_share_low`/`_high` are the quartiles over recorded steps.
    """

    alphas: np.ndarray
    first_share: np.ndarray
    first_share_low: np.ndarray
    first_share_high: np.ndarray
    suggested_alpha: float
    current_alpha: float


def _share_of_first(alphas: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    weighted_first = alphas[:, None] * first[None, :]
    return weighted_first / (weighted_first + (1 - alphas[:, None]) * second[None, :])


def _logit_grid(suggested_alpha: float, points: int) -> np.ndarray:
    """Alphas evenly spaced in log(alpha / (1 - alpha)): dense near 0 and near 1, where balance points lie."""
    edge = max(6.0, abs(math.log10(suggested_alpha / (1 - suggested_alpha))) + 2.0) if 0 < suggested_alpha < 1 else 6.0
    logits = np.linspace(-edge, edge, points) * math.log(10)
    return 1.0 / (1.0 + np.exp(-logits))


def alpha_curve(run: RunData, suggested_alpha: Optional[float], points: int = 121) -> Optional[AlphaCurve]:
    """The share of the first term each alpha would give, from the recorded norms, without retraining.

    A term's gradient scales linearly with its weight, so the share at any alpha follows from the
    unweighted norms (the Gram diagonal) of the recorded steps.
    """
    if len(run.terms) != 2 or suggested_alpha is None or len(run.shared_terms) != 2 or not len(run.gram):
        return None
    first, second = np.sqrt(run.gram[:, 0, 0]), np.sqrt(run.gram[:, 1, 1])
    usable = np.isfinite(first) & np.isfinite(second) & (first + second > 0)
    if not usable.any():
        return None
    first, second = first[usable], second[usable]
    alphas = _logit_grid(suggested_alpha, points)
    central = _share_of_first(alphas, np.median(first, keepdims=True), np.median(second, keepdims=True))[:, 0]
    per_step = _share_of_first(alphas, first, second)
    weights = run.weights[0] if len(run.weights) else np.array([1.0, 1.0])
    if not weights[0] + weights[1] > 0:
        return None  # every weight 0: there is no alpha in force to mark
    current_alpha = float(weights[0] / (weights[0] + weights[1]))
    return AlphaCurve(alphas, central, np.quantile(per_step, 0.25, axis=1), np.quantile(per_step, 0.75, axis=1),
                      float(suggested_alpha), current_alpha)
