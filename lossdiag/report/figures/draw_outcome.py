"""The advice's figures drawn from their info objects (outcome_info.py): each term's end loss under each
weighting, the alpha curve of two terms, and the weights in force beside the recommended ones."""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from lossdiag.report.figures.outcome_info import (AlphaInfo, EndLossInfo, WeightsInfo, alpha_info, end_loss_info,
                                                  weights_info)
from lossdiag.report.figures.theme import (COLOURS, CURRENT, FONT, HATCHES, SUGGESTED, WIDE, WRITTEN_CELLS,
                                           axes, finish, label, legend, tick_size)

MARKS = {"current": (CURRENT, "s", ":"), "suggested": (SUGGESTED, "o", "--")}


def draw_end_losses(info: EndLossInfo, ax: Optional[Axes] = None) -> Figure:
    """Grouped bars of each term's scaled end losses, each labelled in the term's units; a dashed tick marks the
    start."""
    ax = axes(ax, WIDE)
    x = np.arange(len(info.terms))
    width = 0.8 / max(1, len(info.runs))
    for r, name in enumerate(info.runs):
        positions = x - 0.4 + width * (r + 0.5)
        ax.bar(positions, np.nan_to_num(info.heights[r]), width, color=COLOURS[r % len(COLOURS)], edgecolor="black",
               hatch=HATCHES[r % len(HATCHES)], label=name)
        for position, height, value in zip(positions, info.heights[r], info.ends[r]):
            if math.isfinite(value):
                ax.text(position, max(height, 0.0), f"{value:.3g}", ha="center", va="bottom", fontsize=FONT - 1)
    for k, level in enumerate(info.starts):
        if math.isfinite(level):
            ax.hlines(level, k - 0.45, k + 0.45, colors="black", linestyles="--", linewidth=1.0,
                      label="start" if k == 0 else None)
    ax.axhline(0.0, color="black", linewidth=0.6)
    ax.set_xticks(x, [label(t, 32) for t in info.terms], rotation=20, ha="right")
    legend(ax, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return finish(ax, "Each term's loss at the end of each run", "", "end loss / the term's largest")


def end_loss_bars(terms: Sequence[str], runs: Sequence[tuple[str, Sequence[Optional[float]]]],
                  starts: Sequence[Optional[float]], ax: Optional[Axes] = None) -> Figure:
    """Each term's loss at the end of each named run, scaled per term, labelled in its units, its start dashed."""
    return draw_end_losses(end_loss_info(terms, runs, starts), ax)


def _alpha_ticks(ax: Axes, smallest: float) -> None:
    """At most about nine labelled ticks on a logit axis: 1e-k, 0.5 and 1 - 1e-k."""
    decades = max(1, int(math.floor(-math.log10(smallest))))
    stride = max(1, math.ceil(decades / 4))
    powers = range(stride, decades + 1, stride)
    ticks = [10.0 ** -k for k in reversed(powers)] + [0.5] + [1 - 10.0 ** -k for k in powers]
    names = [f"{t:g}" if t >= 1e-3 else f"1e-{k}" for t, k in zip(ticks, [*reversed(powers)])]
    names += ["0.5"] + [f"{1 - 10.0 ** -k:g}" if k <= 3 else f"1-1e-{k}" for k in powers]
    ax.set_xticks(ticks, names)
    ax.xaxis.set_minor_formatter(NullFormatter())


def draw_alpha(info: AlphaInfo, ax: Optional[Axes] = None) -> Figure:
    """The predicted share against alpha on a logit axis, the bands past the threshold hatched, the current alpha
    a square and the suggested one a dot on the curve (as Lightning's lr_find marks its learning rate)."""
    ax = axes(ax, WIDE)
    first, second = label(info.first, 28), label(info.second, 28)
    ax.set_xscale("logit")
    ax.axhspan(info.threshold, 1.0, facecolor="none", hatch="///", edgecolor="#bbbbbb", linewidth=0)
    ax.axhspan(0.0, 1.0 - info.threshold, facecolor="none", hatch="\\\\\\", edgecolor="#bbbbbb", linewidth=0,
               label=f"past the dominance threshold {info.threshold:g}")
    if info.low is not None and info.high is not None:
        ax.fill_between(info.alphas, info.low, info.high, color="#999999", alpha=0.35, linewidth=0,
                        label="quartiles over recorded steps")
    ax.plot(info.alphas, info.first_share, color="black", linewidth=1.8, label=f"predicted share of {first}")
    ax.axhline(0.5, color="#555555", linestyle=":", linewidth=1.0)
    for mark in info.marks:
        colour, marker, dash = MARKS[mark.name]
        if mark.share is None:
            ax.plot([], [], marker=marker, color=colour, linestyle="none",
                    label=f"{mark.name} alpha = {mark.alpha:.4g} (off the axis)")
            continue
        ax.axvline(mark.alpha, color=colour, linestyle=dash, linewidth=1.0)
        ax.plot([mark.alpha], [mark.share], marker=marker, markersize=9, color=colour, markeredgecolor="black",
                linestyle="none", label=f"{mark.name} alpha = {mark.alpha:.4g}")
    ax.set_xlim(info.alphas[0], info.alphas[-1])
    _alpha_ticks(ax, info.alphas[0])
    ax.set_ylim(0, 1)
    legend(ax, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return finish(ax, f"Alpha: alpha·{first} + (1 − alpha)·{second}",
                  "alpha (logit axis: logarithmic near 0 and near 1)", f"predicted share of {first}")


def alpha_curve(alphas: np.ndarray, first_share: np.ndarray, suggested: float, current: float,
                terms: Sequence[str], threshold: float, low: Optional[np.ndarray] = None,
                high: Optional[np.ndarray] = None, ax: Optional[Axes] = None) -> Figure:
    """Predicted share of the first term against alpha (logit axis: logarithmic near 0 and near 1)."""
    return draw_alpha(alpha_info(alphas, first_share, suggested, current, terms, threshold, low, high), ax)


def draw_weights(info: WeightsInfo, ax: Optional[Axes] = None) -> Figure:
    """Bars of the weights in force beside the recommended ones, values written on them unless crowded."""
    crowded = len(info.terms) > WRITTEN_CELLS
    ax = axes(ax, (WIDE[0], WIDE[1] + 1.2) if crowded else WIDE)
    x = np.arange(len(info.terms))
    width = 0.38
    ax.bar(x - width / 2, info.current, width, color="#dddddd", edgecolor="black", hatch="///", label="in force")
    ax.bar(x + width / 2, info.recommended, width, color=SUGGESTED, edgecolor="black", label="recommended")
    values = np.concatenate([info.current, info.recommended])
    for position, value in zip(np.concatenate([x - width / 2, x + width / 2]), values):
        if value > 0 and not crowded:
            ax.text(position, value, f"{value:.3g}", ha="center", va="bottom", fontsize=FONT - 1)
    if info.log:
        ax.set_yscale("log")
    ax.set_xticks(x, [label(t, 24 if crowded else 32) for t in info.terms], rotation=90 if crowded else 20,
                  ha="right")
    legend(ax, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    figure = finish(ax, "Weights: in force and recommended", "", "weight")
    ax.tick_params(axis="x", labelsize=tick_size(len(info.terms)))
    return figure


def weight_bars(terms: Sequence[str], current: Sequence[float], recommended: Sequence[float],
                ax: Optional[Axes] = None) -> Figure:
    """The weights in force beside the recommended ones (same sum); a log axis when they span decades."""
    return draw_weights(weights_info(terms, current, recommended), ax)
