"""The one definition of each quantity the stages share: a term's share of the weighted shared gradient, and the
cosine between two terms' gradients. The summary, the logger scalars, the figures, the advice and the Monitor
all call these, so a share or a cosine means the same thing (with the same NaN and zero rules) everywhere."""
from __future__ import annotations

import math
from typing import Collection, Mapping, Optional

import numpy as np


def share_rows(weighted: np.ndarray, reached: np.ndarray) -> np.ndarray:
    """Each term's share of the weighted gradient on the shared parameters, row by row (steps x terms).

    `weighted` holds |weight| x gradient norm; `reached` says which terms reached shared parameters on each row.
    A term that did not reach them has share 0. Where the total over the terms that did is not finite (one of
    them is NaN or infinite) or not positive (every gradient there is zero), their shares are NaN.
    """
    weighted = np.asarray(weighted, dtype=float)
    reached = np.broadcast_to(np.asarray(reached, dtype=bool), weighted.shape)
    parts = np.where(reached, weighted, 0.0)
    totals = parts.sum(axis=-1, keepdims=True)
    defined = np.isfinite(totals) & (totals > 0)
    with np.errstate(all="ignore"):
        fractions = np.where(defined, parts / np.where(defined, totals, 1.0), math.nan)
    return np.where(reached, fractions, 0.0)


def shares_among(weighted: Mapping[str, float], sharing: Optional[Collection[str]] = None) -> dict[str, float]:
    """One row of share_rows as a mapping: each term's share among `sharing` (every term when None); the terms
    not sharing get 0, the sharing terms NaN where their total is not finite or not positive."""
    terms = list(weighted)
    reached = [sharing is None or t in sharing for t in terms]
    row = share_rows(np.array([[float(weighted[t]) for t in terms]]).reshape(1, -1), np.array([reached]))[0]
    return {t: float(value) for t, value in zip(terms, row)}


def cosines(dot: np.ndarray, square_a: np.ndarray, square_b: np.ndarray) -> np.ndarray:
    """Cosine between two gradients from their dot product and squared norms (Gram entries), clipped to [-1, 1];
    NaN where either gradient is zero or a figure is NaN."""
    with np.errstate(all="ignore"):
        denominator = np.sqrt(np.asarray(square_a, dtype=float) * np.asarray(square_b, dtype=float))
        values = np.asarray(dot, dtype=float) / denominator
    return np.where(denominator > 0, np.clip(values, -1.0, 1.0), math.nan)


def cosine(dot: float, square_a: float, square_b: float) -> float:
    """cosines for one pair of gradients, as a float."""
    return float(cosines(np.float64(dot), np.float64(square_a), np.float64(square_b)))
