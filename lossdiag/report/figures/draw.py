"""The per-step figures drawn from their info objects (info.py): loss curves, gradient norms, the stacked shares,
the single-term checks and the heatmaps. Each takes an optional `ax` and returns the Figure; nothing here
decides what to plot."""
from __future__ import annotations

import math
import textwrap
from typing import Optional, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, NullFormatter, NullLocator

from lossdiag.report.figures.info import (CheckPanel, MapInfo, SeriesInfo, SharesInfo, cosines_info, series_info,
                                          shares_info)
from lossdiag.report.figures.theme import (FONT, SQUARE, WIDE, WRITTEN_CELLS, axes, colour, finish, finish_map,
                                           hatch, label, legend, style, tick_size, value_scale)

FEW_PANELS = 9


def draw_series(info: SeriesInfo, title: str, ylabel: str, ax: Optional[Axes] = None) -> Figure:
    """Each term faint as recorded (or its range per bucket) and bold smoothed; the title says which."""
    ax = axes(ax, WIDE, len(info.terms))
    value_scale(ax, info.scale.log, info.scale.linear)
    every = max(1, len(info.steps) // 8)
    for position, (term, k) in enumerate(zip(info.terms, info.columns)):
        if info.band:
            ax.fill_between(info.raw_steps, info.low[:, position], info.high[:, position], color=colour(k),
                            alpha=0.2, linewidth=0)
        elif info.faint:
            ax.plot(info.raw_steps, info.low[:, position], color=colour(k), alpha=0.3, linewidth=0.7)
        ax.plot(info.steps, info.smooth[:, position], linewidth=1.6, markevery=every, markersize=4,
                label=label(term), **style(k))
    legend(ax)
    return finish(ax, f"{title} ({info.description})", "step", ylabel)


def loss_curves(steps: np.ndarray, losses: np.ndarray, terms: Sequence[str], ax: Optional[Axes] = None) -> Figure:
    """Each term's loss per step on a log axis: faint as recorded, bold smoothed."""
    return draw_series(series_info(steps, losses, terms), "Loss of each term", "loss (unweighted)", ax)


def grad_norms(steps: np.ndarray, norms: np.ndarray, terms: Sequence[str], ax: Optional[Axes] = None) -> Figure:
    """Each term's unweighted gradient norm on the shared parameters, per recorded step, on a log axis."""
    values = np.asarray(norms, dtype=float)
    info = series_info(steps, np.where(values > 0, values, np.nan), terms)
    return draw_series(info, "Gradient norm on the shared parameters", "gradient norm (unweighted)", ax)


def draw_shares(info: SharesInfo, ax: Optional[Axes] = None) -> Figure:
    """The shares stacked, each band hatched, with the dominance threshold dashed across."""
    ax = axes(ax, WIDE)
    colours = [colour(k) if k is not None else "#bbbbbb" for k in info.columns]
    areas = ax.stackplot(info.steps, info.shares.T, labels=[label(n) for n in info.names], colors=colours,
                         alpha=0.85)
    for area, k in zip(areas, info.columns):
        area.set_hatch(hatch(k) if k is not None else "")
        area.set_edgecolor("#222222")
        area.set_linewidth(0.3)
    ax.axhline(info.threshold, color="black", linestyle="--", linewidth=1.3,
               label=f"dominance threshold {info.threshold:g}")
    ax.set_ylim(0, 1)
    ax.set_xlim(info.steps[0], info.steps[-1])
    legend(ax, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return finish(ax, "Share of the weighted gradient on the shared parameters", "step", "share (stacked)")


def share_area(steps: np.ndarray, shares: np.ndarray, terms: Sequence[str], threshold: float,
               ax: Optional[Axes] = None) -> Figure:
    """Each term's share of the weighted shared gradient per recorded step, stacked, with the dominance threshold."""
    return draw_shares(shares_info(steps, shares, terms, threshold), ax)


def draw_cosines(info: MapInfo, ax: Optional[Axes] = None) -> Figure:
    """The cosine matrix, colours fixed to [-1, 1], square, values written in when `info.written`."""
    count = len(info.columns)
    side = float(np.clip(2.6 + 0.16 * count, SQUARE[0], 11.0))
    ax = axes(ax, (side, side - 0.8) if count > WRITTEN_CELLS else SQUARE)
    ax.imshow(info.values, cmap="RdBu", vmin=-1.0, vmax=1.0)
    names = [label(t, 32 if count <= WRITTEN_CELLS else 24) for t in info.columns]
    ax.set_xticks(range(count), names, rotation=30 if count <= WRITTEN_CELLS else 90, ha="right")
    ax.set_yticks(range(count), names)
    figure = finish_map(ax, info.values if info.written else None, lambda value: abs(value) > 0.6,
                        "median cosine (-1 opposed, 0 unrelated, 1 aligned)", "Gradient cosine between terms")
    ax.tick_params(labelsize=tick_size(count))
    return figure


def cosine_heatmap(matrix: np.ndarray, terms: Sequence[str], ax: Optional[Axes] = None) -> Figure:
    """Median cosine between each pair of terms' shared gradients, colours fixed to [-1, 1], values written in."""
    return draw_cosines(cosines_info(matrix, terms, WRITTEN_CELLS), ax)


def draw_layers(info: MapInfo, ax: Optional[Axes] = None) -> Figure:
    """Each shared module's shares per term (rows: modules, columns: terms), sized to both."""
    count = len(info.columns)
    height = float(np.clip(1.2 + 0.3 * len(info.rows), 2.6, 14.0)) + (1.0 if count > WRITTEN_CELLS else 0.0)
    width = 1.6 + 1.0 * count if count <= WRITTEN_CELLS else 2.6 + 0.16 * count
    ax = axes(ax, (float(np.clip(width, 3.6, 11.0)), height))
    ax.imshow(info.values, cmap="cividis", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(count), [label(t, 32 if count <= WRITTEN_CELLS else 24) for t in info.columns],
                  rotation=30 if count <= WRITTEN_CELLS else 90, ha="right")
    ax.set_yticks(range(len(info.rows)), [label(m, 36) for m in info.rows])
    figure = finish_map(ax, info.values if info.written else None, lambda value: value <= 0.6,
                        "share of the module's gradient", "Share of each shared module's gradient", FONT - 1)
    ax.tick_params(axis="x", labelsize=tick_size(count))
    return figure


def _panels(count: int) -> list[Axes]:
    few = count <= FEW_PANELS
    columns = min(count, 3 if few else 5)
    rows = math.ceil(count / columns)
    width, height = (2.6, 2.3) if few else (2.0, 1.7)
    figure = Figure(figsize=(width * columns + 0.6, height * rows + 0.4), layout="constrained" if few else None)
    if not few:  # constrained layout over dozens of panels takes minutes; a fixed grid reads as well
        figure.subplots_adjust(left=0.06, right=0.99, bottom=0.5 / (height * rows), top=1 - 0.4 / (height * rows),
                               wspace=0.45, hspace=0.75)
    panels = list(figure.subplots(rows, columns, squeeze=False).ravel())
    for spare in panels[count:]:
        spare.set_axis_off()
    return panels


def check_curves(checks: Sequence[CheckPanel], ax: Optional[Sequence[Axes]] = None) -> Figure:
    """Small multiples, one panel a term: its loss trained alone against the same term under the combined loss."""
    panels = list(ax) if ax is not None else _panels(len(checks))
    few = len(checks) <= FEW_PANELS
    for panel, check in zip(panels, checks):
        title = f"{label(check.term, 28 if few else 18)}: {check.status}"
        if not check.lines:
            panel.text(0.5, 0.5, textwrap.fill(label(check.reason, 90), 30), ha="center", va="center",
                       fontsize=FONT, transform=panel.transAxes)
            panel.set_xticks([])
            panel.set_yticks([])
            panel.set_title(title, fontsize=FONT + 1, loc="left")
            continue
        value_scale(panel, check.scale.log, check.scale.linear)
        for k, (name, x, y) in enumerate(check.lines):
            panel.plot(x, y, linewidth=1.3, markevery=max(1, len(x) // 6), markersize=3.5, label=name, **style(k))
        finish(panel, title, "step", "loss")
        if not few:
            panel.xaxis.set_major_locator(MaxNLocator(3))
            panel.yaxis.set_minor_locator(NullLocator())
            panel.yaxis.set_minor_formatter(NullFormatter())
    legend(next((p for p in panels if p.get_lines()), panels[0]))
    return panels[0].get_figure(root=True)
