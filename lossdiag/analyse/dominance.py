"""Dominance: each term's share of the weighted gradient norm on the shared parameters."""
from __future__ import annotations

import dataclasses
import math
from typing import Optional

import numpy as np

from lossdiag.analyse.quantities import share_rows, shares_among
from lossdiag.analyse.run import RunData, finite_median


@dataclasses.dataclass(frozen=True)
class Dominance:
    """Median gradient norms over the recorded window and the shares they give each term."""

    grad_norms: dict[str, float]
    weighted_norms: dict[str, float]
    shares: dict[str, float]
    ratio: Optional[float]
    dominant_term: Optional[str]
    threshold: float
    share_series: np.ndarray


def dominance(run: RunData, threshold: float) -> Dominance:
    """Shares of the median weighted gradient norms, over the terms that reach shared parameters.

    Medians over the whole recorded window, not the first steps: norms move fast early in training. A term's
    median is over the steps on which it reached shared parameters (an auxiliary head detached for a warm-up
    counts from its first step on the trunk), and each step's shares are among the terms that reached them then.
    """
    balanced = [k for k, t in enumerate(run.terms) if t in run.shared_terms]
    weighted = np.abs(run.weights) * run.norms
    steps = run.share_steps
    grad_norms = {t: finite_median(run.norms[steps[:, k], k]) for k, t in enumerate(run.terms)}
    weighted_norms = {t: finite_median(weighted[steps[:, k], k]) for k, t in enumerate(run.terms)}
    shares = shares_among(weighted_norms, [run.terms[k] for k in balanced])
    values = [weighted_norms[run.terms[k]] for k in balanced]
    ratio = None
    if len(values) >= 2 and all(math.isfinite(v) for v in values) and min(values) > 0:
        ratio = max(values) / min(values)
    dominant = None
    if len(balanced) >= 2:
        leader = max((run.terms[k] for k in balanced), key=lambda t: np.nan_to_num(shares[t], nan=-1.0))
        dominant = leader if shares[leader] > threshold else None
    series = np.full_like(weighted, np.nan)
    if balanced:
        series[:, balanced] = share_rows(weighted[:, balanced], run.on_shared[:, balanced])
    return Dominance(grad_norms, weighted_norms, shares, ratio, dominant, threshold, series)
