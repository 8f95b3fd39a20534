"""Thin long series for plotting: bucket means and ranges, and a NaN-aware centred rolling mean.

A 20,000-step run is drawn from a few hundred points per line, so a figure costs the same and the page
stays small however long the run was; ranges keep the spikes that plain striding would drop.
"""
from __future__ import annotations

import numpy as np

MAX_POINTS = 500


def bucket_edges(count: int, max_points: int = MAX_POINTS) -> np.ndarray:
    """Start indices of at most `max_points` contiguous, near-equal buckets covering `count` points."""
    buckets = max(1, min(count, max_points))
    return np.unique(np.linspace(0, count, buckets + 1).astype(int)[:-1])


def _finite_sums(values: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    finite = np.isfinite(values)
    sums = np.add.reduceat(np.where(finite, values, 0.0), edges, axis=0)
    counts = np.add.reduceat(finite.astype(float), edges, axis=0)
    return sums, counts


def bucket_mean(steps: np.ndarray, values: np.ndarray,
                max_points: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """Mean step and mean of the finite values (per column) in each bucket; NaN for a bucket with none."""
    steps, values = np.asarray(steps, dtype=float), np.asarray(values, dtype=float)
    if len(steps) <= max_points:
        return steps, values
    edges = bucket_edges(len(steps), max_points)
    sums, counts = _finite_sums(values, edges)
    with np.errstate(all="ignore"):
        means = np.where(counts > 0, sums / counts, np.nan)
    return np.add.reduceat(steps, edges) / np.diff(np.append(edges, len(steps))), means


def bucket_range(steps: np.ndarray, values: np.ndarray,
                 max_points: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean step, smallest and largest finite value (per column) in each bucket; NaN for a bucket with none."""
    steps, values = np.asarray(steps, dtype=float), np.asarray(values, dtype=float)
    if len(steps) <= max_points:
        return steps, values, values
    edges = bucket_edges(len(steps), max_points)
    finite = np.isfinite(values)
    low = np.minimum.reduceat(np.where(finite, values, np.inf), edges, axis=0)
    high = np.maximum.reduceat(np.where(finite, values, -np.inf), edges, axis=0)
    centres = np.add.reduceat(steps, edges) / np.diff(np.append(edges, len(steps)))
    return centres, np.where(np.isfinite(low), low, np.nan), np.where(np.isfinite(high), high, np.nan)


def rolling_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Centred mean over `window` points (per column), ignoring NaN; NaN where the window holds none."""
    values = np.asarray(values, dtype=float)
    half = max(0, int(window) // 2)
    if half == 0 or len(values) == 0:
        return values.copy()
    finite = np.isfinite(values)
    zero_row = np.zeros((1, *values.shape[1:]))
    sums = np.concatenate([zero_row, np.cumsum(np.where(finite, values, 0.0), axis=0)])
    counts = np.concatenate([zero_row, np.cumsum(finite, axis=0)])
    index = np.arange(len(values))
    high, low = np.minimum(index + half + 1, len(values)), np.maximum(index - half, 0)
    window_counts = counts[high] - counts[low]
    with np.errstate(all="ignore"):
        return np.where(window_counts > 0, (sums[high] - sums[low]) / window_counts, np.nan)


def smoothing_window(count: int) -> int:
    """A window that smooths a curve of `count` points without flattening its shape (about 1/25 of it)."""
    return int(np.clip(count // 25, 1, 2000))
