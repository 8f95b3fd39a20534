"""What the per-step figures plot, as plain data (optuna's `_get_xxx_info` pattern): each `*_info` function picks,
smooths and thins the run's arrays into a frozen info object; the drawing functions (draw.py) only draw it, and
tests assert on the info."""
from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence

import numpy as np

from lossdiag.report.downsample import MAX_POINTS, bucket_mean, bucket_range, rolling_mean, smoothing_window
from lossdiag.report.figures.theme import LEGEND_BESIDE

MAX_BANDS = 10


@dataclasses.dataclass(frozen=True)
class Scale:
    """A value axis: logarithmic when every finite value is positive, else symmetric log, linear up to `linear`."""

    log: bool
    linear: float = 1.0


def scale_of(values: np.ndarray) -> Scale:
    """The value axis for `values`: log when all finite ones are positive, else symlog linear up to the smallest
    nonzero magnitude."""
    finite = values[np.isfinite(values)]
    if finite.size and (finite > 0).all():
        return Scale(True)
    nonzero = np.abs(finite[finite != 0])
    return Scale(False, float(nonzero.min()) if nonzero.size else 1.0)


@dataclasses.dataclass(frozen=True)
class SeriesInfo:
    """Each term's per-step series: bold smoothed lines and, when `faint`, the recorded values (their range per
    bucket on long runs) behind them. `columns` are the drawn terms' positions, which pick their styles."""

    terms: tuple[str, ...]
    columns: tuple[int, ...]
    scale: Scale
    steps: np.ndarray
    smooth: np.ndarray
    raw_steps: np.ndarray
    low: np.ndarray
    high: np.ndarray
    faint: bool
    band: bool
    description: str


def series_info(steps: np.ndarray, values: np.ndarray, terms: Sequence[str]) -> SeriesInfo:
    """A per-step series (one column a term) smoothed by a rolling mean (geometric on a log axis) and thinned to
    at most MAX_POINTS points; terms with no finite value are left out."""
    steps, values = np.asarray(steps), np.asarray(values, dtype=float)
    scale = scale_of(values)
    window = smoothing_window(len(steps))
    if scale.log:
        with np.errstate(all="ignore"):
            smooth = np.exp(rolling_mean(np.log(values), window))
    else:
        smooth = rolling_mean(values, window)
    smooth_steps, smooth = bucket_mean(steps, smooth)
    raw_steps, low, high = bucket_range(steps, values)
    faint = window > 1 and len(terms) <= LEGEND_BESIDE
    band = faint and len(steps) > MAX_POINTS
    if window == 1:
        description = "as recorded"
    elif not faint:
        description = f"rolling mean over {window} points, recorded points left out"
    else:
        description = (f"bold: rolling mean over {window} points; faint: "
                       f"{'range per bucket of recorded points' if band else 'as recorded'}")
    columns = tuple(k for k in range(len(terms)) if np.isfinite(values[:, k]).any())
    return SeriesInfo(tuple(terms[k] for k in columns), columns, scale, smooth_steps, smooth[:, list(columns)],
                      raw_steps, low[:, list(columns)], high[:, list(columns)], faint, band, description)


@dataclasses.dataclass(frozen=True)
class SharesInfo:
    """Stacked bands of each term's share per step; past MAX_BANDS terms the smallest are summed into one band,
    whose column is None. `threshold` is the dominance threshold drawn across."""

    steps: np.ndarray
    shares: np.ndarray
    names: tuple[str, ...]
    columns: tuple[Optional[int], ...]
    threshold: float


def shares_info(steps: np.ndarray, shares: np.ndarray, terms: Sequence[str], threshold: float) -> SharesInfo:
    """The shares of the terms with any finite share, on the steps where all of theirs are finite, thinned; a
    single step is widened to a band one step wide."""
    shares = np.asarray(shares, dtype=float)
    columns = [k for k in range(shares.shape[1]) if np.isfinite(shares[:, k]).any()]
    rows = np.isfinite(shares[:, columns]).all(axis=1)
    x, data = bucket_mean(np.asarray(steps)[rows], shares[rows][:, columns])
    if len(x) == 1:
        x, data = np.array([x[0] - 0.5, x[0] + 0.5]), np.repeat(data, 2, axis=0)
    names: list[str] = [terms[k] for k in columns]
    kept: list[Optional[int]] = list(columns)
    if len(columns) > MAX_BANDS:
        largest = sorted(np.argsort(-np.median(data, axis=0), kind="stable")[:MAX_BANDS - 1])
        rest = [i for i in range(len(columns)) if i not in set(largest)]
        data = np.column_stack([data[:, largest], data[:, rest].sum(axis=1)])
        names = [names[i] for i in largest] + [f"the other {len(rest)} terms"]
        kept = [columns[i] for i in largest] + [None]
    return SharesInfo(x, data, tuple(names), tuple(kept), float(threshold))


@dataclasses.dataclass(frozen=True)
class MapInfo:
    """A matrix of values between -1 and 1 or 0 and 1 (rows, columns named), with the values written in or not."""

    values: np.ndarray
    rows: tuple[str, ...]
    columns: tuple[str, ...]
    written: bool


def cosines_info(matrix: np.ndarray, terms: Sequence[str], written_cells: int) -> MapInfo:
    """The cosine matrix of the terms on shared parameters, values written in up to `written_cells` terms."""
    return MapInfo(np.asarray(matrix, dtype=float), tuple(terms), tuple(terms), len(terms) <= written_cells)


def layers_info(layers: dict, terms: Sequence[str], written_cells: int) -> MapInfo:
    """Each shared module's shares per term (rows: modules), from the summary's `layers`; values written in for
    at most 160 cells and `written_cells` terms."""
    modules = tuple(layers)
    shares = np.array([nan_floats([layers[m].get(t) for t in terms]) for m in modules]).reshape(-1, len(terms))
    return MapInfo(shares, modules, tuple(terms), shares.size <= 160 and len(terms) <= written_cells)


def nan_floats(values: Sequence[Optional[float]]) -> np.ndarray:
    """Floats with None as NaN."""
    return np.array([math.nan if v is None else v for v in values], dtype=float)


@dataclasses.dataclass(frozen=True)
class CheckPanel:
    """One single-term check: the term's loss trained alone and under the combined loss from the same start, each
    thinned to (x, y); `reason` when there is no curve to draw."""

    term: str
    status: str
    reason: str
    scale: Scale
    lines: tuple[tuple[str, np.ndarray, np.ndarray], ...]


def check_panel(term: str, status: str, alone: np.ndarray, combined: np.ndarray, reason: str = "") -> CheckPanel:
    """A check's panel from its two loss curves (an empty `alone`: nothing to draw but `reason`)."""
    alone, combined = np.asarray(alone, dtype=float), np.asarray(combined, dtype=float)
    if not alone.size:
        return CheckPanel(term, status, reason or "no curve recorded", Scale(True), ())
    lines = tuple((name, *bucket_mean(np.arange(len(values)), values))
                  for name, values in (("alone", alone), ("combined", combined)))
    return CheckPanel(term, status, reason, scale_of(np.concatenate([alone, combined])), lines)


def checks_info(check_records: Sequence[dict], terms: Sequence[str], losses: np.ndarray) -> tuple[CheckPanel, ...]:
    """A panel per 'check' record: its term's losses alone against the recorded run's first as many steps."""
    panels = []
    for record in check_records:
        term = str(record.get("term", ""))
        alone = nan_floats(record.get("losses") or [])
        combined = losses[: len(alone), terms.index(term)] if term in terms else np.array([])
        panels.append(check_panel(term, str(record.get("status", "")), alone, combined,
                                  str(record.get("reason") or "")))
    return tuple(panels)
