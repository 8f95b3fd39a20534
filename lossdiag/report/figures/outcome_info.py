"""What the advice's figures plot, as plain data: each term's end loss under each weighting, the alpha curve of
two terms with its marks, and the weights in force beside the recommended ones."""
from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence

import numpy as np

from lossdiag.report.figures.info import nan_floats

ALPHA_EDGE = 1e-15  # the logit axis spans ALPHA_EDGE..1 - ALPHA_EDGE: matplotlib cannot draw one reaching further
WIDE_WEIGHTS = 20.0


@dataclasses.dataclass(frozen=True)
class EndLossInfo:
    """Each term's loss at the end of each named run (rows: runs), scaled per term by the largest magnitude among
    its start and its ends so a term that starts at 0 reads as well as one at 4000; `starts` scaled alike."""

    terms: tuple[str, ...]
    runs: tuple[str, ...]
    ends: np.ndarray
    heights: np.ndarray
    starts: np.ndarray


def end_loss_info(terms: Sequence[str], runs: Sequence[tuple[str, Sequence[Optional[float]]]],
                  starts: Sequence[Optional[float]]) -> EndLossInfo:
    """The end losses of `runs` ((name, one loss a term) pairs) and the terms' starts, scaled per term."""
    table = np.array([nan_floats(values) for _, values in runs], dtype=float).reshape(len(runs), len(terms))
    start = nan_floats(starts)
    magnitudes = np.abs(np.vstack([table, start[None, :]]))
    scale = np.where(np.isfinite(magnitudes), magnitudes, -np.inf).max(axis=0)
    scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
    return EndLossInfo(tuple(terms), tuple(name for name, _ in runs), table, table / scale, start / scale)


def outcome_runs(summary: dict, terms: Sequence[str]) -> tuple[list[tuple[str, list]], list]:
    """The runs the progress figure compares, from the summary: each term alone, under the weights in force and,
    when one was chosen, under the recommended weights; and each term's start."""
    outcome, situations = summary["outcome"], summary.get("situations") or {}
    runs = [("alone", [situations.get(t, {}).get("alone") for t in terms]),
            ("weights in force", [outcome["in_force"].get(t) for t in terms])]
    if outcome.get("chosen") is not None:
        runs.append(("recommended", [outcome["candidates"][outcome["chosen"]]["end"].get(t) for t in terms]))
    return runs, [situations.get(t, {}).get("start") for t in terms]


@dataclasses.dataclass(frozen=True)
class AlphaMark:
    """The current or the suggested alpha: where it sits on the curve, or None when it is off the drawable axis."""

    name: str
    alpha: float
    share: Optional[float]


@dataclasses.dataclass(frozen=True)
class AlphaInfo:
    """The predicted share of the first term against alpha, within ALPHA_EDGE..1 - ALPHA_EDGE (logit axis), its
    quartile band when known, the dominance threshold and the marks."""

    first: str
    second: str
    alphas: np.ndarray
    first_share: np.ndarray
    low: Optional[np.ndarray]
    high: Optional[np.ndarray]
    threshold: float
    marks: tuple[AlphaMark, ...]


def alpha_info(alphas: np.ndarray, first_share: np.ndarray, suggested: float, current: float, terms: Sequence[str],
               threshold: float, low: Optional[np.ndarray] = None,
               high: Optional[np.ndarray] = None) -> AlphaInfo:
    """The alpha curve cut to the drawable range, and the current and suggested alphas placed on it (an alpha at
    0 or 1 is not marked; one beyond the drawable range is named, not placed)."""
    alphas, first_share = np.asarray(alphas, dtype=float), np.asarray(first_share, dtype=float)
    drawable = (alphas >= ALPHA_EDGE) & (1 - alphas >= ALPHA_EDGE)
    alphas, first_share = alphas[drawable], first_share[drawable]
    band = low is not None and high is not None
    if band:
        low, high = np.asarray(low, dtype=float)[drawable], np.asarray(high, dtype=float)[drawable]
    logits = np.log(alphas / (1 - alphas))
    marks = []
    for name, alpha in (("current", current), ("suggested", suggested)):
        if not 0.0 < alpha < 1.0:
            continue
        placed = alpha >= ALPHA_EDGE and 1 - alpha >= ALPHA_EDGE
        share = float(np.interp(math.log(alpha / (1 - alpha)), logits, first_share)) if placed else None
        marks.append(AlphaMark(name, float(alpha), share))
    return AlphaInfo(str(terms[0]), str(terms[1]), alphas, first_share, low if band else None,
                     high if band else None, float(threshold), tuple(marks))


@dataclasses.dataclass(frozen=True)
class WeightsInfo:
    """The weights in force (magnitudes) beside the recommended ones; `log` when they span WIDE_WEIGHTS or more."""

    terms: tuple[str, ...]
    current: np.ndarray
    recommended: np.ndarray
    log: bool


def weights_info(terms: Sequence[str], current: Sequence[float], recommended: Sequence[float]) -> WeightsInfo:
    """The two sets of weights, on a log axis when the positive ones span decades."""
    current_values = np.abs(np.asarray(current, dtype=float))
    recommended_values = np.asarray(recommended, dtype=float)
    values = np.concatenate([current_values, recommended_values])
    positive = values[values > 0]
    log = bool(positive.size and positive.max() / positive.min() >= WIDE_WEIGHTS)
    return WeightsInfo(tuple(terms), current_values, recommended_values, log)
