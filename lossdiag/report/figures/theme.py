"""How every figure looks: Okabe-Ito colours (safe for colour-blind readers), dashes, markers and hatches so a
figure also reads in black and white, the fonts, the legend's place and the axes' finish. Matplotlib's object API
only (never pyplot)."""
from __future__ import annotations

import math
from typing import Callable, Optional

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from lossdiag.report.text import term_text

COLOURS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
DASHES = ("-", "--", ":", "-.")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
HATCHES = ("", "///", "...", "xxx", "\\\\\\", "+++", "ooo", "---")
SUGGESTED, CURRENT = "#D55E00", "#0072B2"
LEGEND_BESIDE = 12
LEGEND_COLUMNS = 4
LEGEND_ROW = 0.15
WRITTEN_CELLS = 12
WIDE, SQUARE = (7.2, 3.4), (4.8, 4.0)
FONT = 8


def label(value: object, limit: int = 48) -> str:
    """A user string (a term or module name) as literal figure text, as term_text shows it: escapes visible, cut
    in the middle past `limit` with a digest so distinct names stay distinct; '$' never read as mathtext."""
    return term_text(value, limit).replace("$", r"\$")


def style(k: int) -> dict:
    """Line style of the k-th term: its colour, dash and marker, no two terms alike below 256 terms."""
    turn = k // len(COLOURS)
    return {"color": COLOURS[k % len(COLOURS)], "linestyle": DASHES[(k + turn) % len(DASHES)],
            "marker": MARKERS[(k + k // (len(COLOURS) * len(DASHES))) % len(MARKERS)]}


def colour(k: int) -> str:
    """The k-th term's colour."""
    return COLOURS[k % len(COLOURS)]


def hatch(k: int) -> str:
    """The k-th term's hatching, no two of the first 64 terms alike in colour and hatch."""
    return HATCHES[(k + k // len(COLOURS)) % len(HATCHES)]


def legend_rows(entries: int) -> int:
    """Rows of a legend of `entries` below its axes (0: it fits beside or inside them)."""
    return math.ceil(entries / LEGEND_COLUMNS) if entries > LEGEND_BESIDE else 0


def axes(ax: Optional[Axes], size: tuple[float, float], terms: int = 0) -> Axes:
    """The axes to draw on: `ax`, or a new figure of `size`, taller by the rows of a legend of `terms` terms."""
    if ax is not None:
        return ax
    height = size[1] + LEGEND_ROW * legend_rows(terms)
    return Figure(figsize=(size[0], height), layout="constrained").add_subplot()


def finish(ax: Axes, title: str, xlabel: str, ylabel: str) -> Figure:
    """Title, axis labels, font sizes and a light grid; returns the axes' figure."""
    ax.set_title(title, fontsize=FONT + 1, loc="left")
    ax.set_xlabel(xlabel, fontsize=FONT)
    ax.set_ylabel(ylabel, fontsize=FONT)
    ax.tick_params(which="both", labelsize=FONT)
    ax.grid(True, which="major", color="#dddddd", linewidth=0.6)
    ax.set_axisbelow(True)
    return ax.get_figure(root=True)


def legend(ax: Axes, unique: bool = False, size: float = FONT - 0.5, **options: object) -> None:
    """The legend where `options` put it, in `size` points, or, past LEGEND_BESIDE entries, below the axes in
    columns; `unique` keeps one entry per label (marks drawn on several lines)."""
    handles, labels = ax.get_legend_handles_labels()
    if unique:
        kept = dict(zip(labels, handles))
        labels, handles = list(kept), list(kept.values())
    if not handles:
        return
    if legend_rows(len(handles)):
        ax.legend(handles, [text if len(text) <= 30 else text[:29] + "…" for text in labels], fontsize=FONT - 1.5,
                  frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncols=LEGEND_COLUMNS)
        return
    ax.legend(handles, labels, fontsize=size, frameon=False, **options)


def value_scale(ax: Axes, log: bool, linear: float = 1.0) -> None:
    """A log value axis, or a symmetric log one, linear around 0 up to `linear`."""
    if log:
        ax.set_yscale("log")
    else:
        ax.set_yscale("symlog", linthresh=linear)


def tick_size(count: int) -> float:
    """Tick labels shrink past WRITTEN_CELLS rows or columns, down to 5 points, so they do not overlap."""
    return FONT if count <= WRITTEN_CELLS else max(5.0, FONT - (count - WRITTEN_CELLS) / 12)


def finish_map(ax: Axes, cells: Optional[np.ndarray], dark: Callable[[float], bool], bar_label: str, title: str,
               fontsize: float = FONT) -> Figure:
    """Write `cells` in (white where `dark`; None: no values), add the colourbar of the axes' image, then finish."""
    for (i, j), value in np.ndenumerate(cells) if cells is not None else ():
        text, white = (f"{value:.2f}", dark(value)) if math.isfinite(value) else ("n/a", False)
        ax.text(j, i, text, ha="center", va="center", fontsize=fontsize, color="white" if white else "black")
    colourbar = ax.get_figure(root=True).colorbar(ax.images[-1], ax=ax, shrink=0.85)
    colourbar.set_label(bar_label, fontsize=FONT)
    colourbar.ax.tick_params(labelsize=FONT)
    figure = finish(ax, title, "", "")
    ax.grid(False)
    return figure
