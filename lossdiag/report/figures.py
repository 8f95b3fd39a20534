"""The report's figures, drawn with matplotlib's object API (never pyplot): one function per figure, plain data in.

Each function takes arrays and names, draws on the `ax` it is given (or on a new Figure) and returns the
Figure. Lines differ by colour (Okabe-Ito, safe for colour-blind readers), dash and marker, and areas
by hatching, so every figure also reads in black and white.
"""
from __future__ import annotations

import dataclasses
import io
import math
import textwrap
from typing import Callable, Mapping, Optional, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, NullFormatter, NullLocator

from lossdiag.advise.diagnose import Diagnosis
from lossdiag.report.downsample import MAX_POINTS, bucket_mean, bucket_range, rolling_mean, smoothing_window
from lossdiag.report.terminal import term_text

COLOURS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
DASHES = ("-", "--", ":", "-.")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
HATCHES = ("", "///", "...", "xxx", "\\\\\\", "+++", "ooo", "---")
SUGGESTED, CURRENT = "#D55E00", "#0072B2"
LEGEND_BESIDE = 12
LEGEND_COLUMNS = 4
LEGEND_ROW = 0.15
MAX_BANDS = 10
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


def _legend_rows(entries: int) -> int:
    """Rows of a legend of `entries` below its axes (0: it fits beside or inside them)."""
    return math.ceil(entries / LEGEND_COLUMNS) if entries > LEGEND_BESIDE else 0


def _axes(ax: Optional[Axes], size: tuple[float, float], terms: int = 0) -> Axes:
    """The axes to draw on: `ax`, or a new figure of `size`, taller by the rows of a legend of `terms` terms."""
    if ax is not None:
        return ax
    height = size[1] + LEGEND_ROW * _legend_rows(terms)
    return Figure(figsize=(size[0], height), layout="constrained").add_subplot()


def _finish(ax: Axes, title: str, xlabel: str, ylabel: str) -> Figure:
    ax.set_title(title, fontsize=FONT + 1, loc="left")
    ax.set_xlabel(xlabel, fontsize=FONT)
    ax.set_ylabel(ylabel, fontsize=FONT)
    ax.tick_params(which="both", labelsize=FONT)
    ax.grid(True, which="major", color="#dddddd", linewidth=0.6)
    ax.set_axisbelow(True)
    return ax.get_figure(root=True)


def _legend(ax: Axes, **options: object) -> None:
    """The legend where `options` put it, or, past LEGEND_BESIDE entries, below the axes in columns."""
    handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return
    if _legend_rows(len(handles)):
        ax.legend(handles, [text if len(text) <= 30 else text[:29] + "…" for text in labels], fontsize=FONT - 1.5,
                  frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncols=LEGEND_COLUMNS)
        return
    ax.legend(fontsize=FONT - 0.5, frameon=False, **options)


def _value_scale(ax: Axes, values: np.ndarray) -> bool:
    """A log axis when every finite value is positive (True), a symmetric log axis otherwise."""
    finite = values[np.isfinite(values)]
    if finite.size and (finite > 0).all():
        ax.set_yscale("log")
        return True
    nonzero = np.abs(finite[finite != 0])
    ax.set_yscale("symlog", linthresh=float(nonzero.min()) if nonzero.size else 1.0)
    return False


def _series(ax: Axes, steps: np.ndarray, values: np.ndarray, terms: Sequence[str]) -> str:
    """Each column faint as recorded (its range per bucket on long runs) and bold smoothed; says which in words."""
    log = _value_scale(ax, values)
    window = smoothing_window(len(steps))
    if log:
        with np.errstate(all="ignore"):
            smooth = np.exp(rolling_mean(np.log(values), window))
    else:
        smooth = rolling_mean(values, window)
    smooth_steps, smooth = bucket_mean(steps, smooth)
    raw_steps, low, high = bucket_range(steps, values)
    every = max(1, len(smooth_steps) // 8)
    faint = window > 1 and len(terms) <= LEGEND_BESIDE
    for k, term in enumerate(terms):
        if not np.isfinite(values[:, k]).any():
            continue
        colour = COLOURS[k % len(COLOURS)]
        if faint and len(steps) > MAX_POINTS:
            ax.fill_between(raw_steps, low[:, k], high[:, k], color=colour, alpha=0.2, linewidth=0)
        elif faint:
            ax.plot(raw_steps, low[:, k], color=colour, alpha=0.3, linewidth=0.7)
        ax.plot(smooth_steps, smooth[:, k], linewidth=1.6, markevery=every, markersize=4,
                label=label(term), **style(k))
    if window == 1:
        return "as recorded"
    if not faint:
        return f"rolling mean over {window} points, recorded points left out"
    recorded = "range per bucket of recorded points" if len(steps) > MAX_POINTS else "as recorded"
    return f"bold: rolling mean over {window} points; faint: {recorded}"


def loss_curves(steps: np.ndarray, losses: np.ndarray, terms: Sequence[str], ax: Optional[Axes] = None) -> Figure:
    """Each term's loss per step on a log axis: faint as recorded, bold smoothed."""
    ax = _axes(ax, WIDE, len(terms))
    drawn = _series(ax, np.asarray(steps), np.asarray(losses, dtype=float), terms)
    _legend(ax)
    return _finish(ax, f"Loss of each term ({drawn})", "step", "loss (unweighted)")


def grad_norms(steps: np.ndarray, norms: np.ndarray, terms: Sequence[str], ax: Optional[Axes] = None) -> Figure:
    """Each term's unweighted gradient norm on the shared parameters, per recorded step, on a log axis."""
    ax = _axes(ax, WIDE, len(terms))
    values = np.asarray(norms, dtype=float)
    drawn = _series(ax, np.asarray(steps), np.where(values > 0, values, np.nan), terms)
    _legend(ax)
    return _finish(ax, f"Gradient norm on the shared parameters ({drawn})", "step", "gradient norm (unweighted)")


def share_area(steps: np.ndarray, shares: np.ndarray, terms: Sequence[str], threshold: float,
               ax: Optional[Axes] = None) -> Figure:
    """Each term's share of the weighted shared gradient per recorded step, stacked, with the dominance threshold."""
    ax = _axes(ax, WIDE)
    shares = np.asarray(shares, dtype=float)
    columns = [k for k in range(shares.shape[1]) if np.isfinite(shares[:, k]).any()]
    rows = np.isfinite(shares[:, columns]).all(axis=1)
    x, data = bucket_mean(np.asarray(steps)[rows], shares[rows][:, columns])
    if len(x) == 1:
        x, data = np.array([x[0] - 0.5, x[0] + 0.5]), np.repeat(data, 2, axis=0)
    names = [label(terms[k]) for k in columns]
    colours = [COLOURS[k % len(COLOURS)] for k in columns]
    hatches = [HATCHES[(k + k // len(COLOURS)) % len(HATCHES)] for k in columns]
    if len(columns) > MAX_BANDS:
        largest = sorted(np.argsort(-np.median(data, axis=0), kind="stable")[:MAX_BANDS - 1])
        rest = [i for i in range(len(columns)) if i not in set(largest)]
        data = np.column_stack([data[:, largest], data[:, rest].sum(axis=1)])
        names = [names[i] for i in largest] + [f"the other {len(rest)} terms"]
        colours = [colours[i] for i in largest] + ["#bbbbbb"]
        hatches = [hatches[i] for i in largest] + [""]
    areas = ax.stackplot(x, data.T, labels=names, colors=colours, alpha=0.85)
    for area, hatch in zip(areas, hatches):
        area.set_hatch(hatch)
        area.set_edgecolor("#222222")
        area.set_linewidth(0.3)
    ax.axhline(threshold, color="black", linestyle="--", linewidth=1.3, label=f"dominance threshold {threshold:g}")
    ax.set_ylim(0, 1)
    ax.set_xlim(x[0], x[-1])
    _legend(ax, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _finish(ax, "Share of the weighted gradient on the shared parameters", "step", "share (stacked)")


def _finish_map(ax: Axes, cells: Optional[np.ndarray], dark: Callable[[float], bool], bar_label: str, title: str,
                fontsize: float = FONT) -> Figure:
    """Write `cells` in (white where `dark`; None: no values), add the colourbar of the axes' image, then finish."""
    for (i, j), value in np.ndenumerate(cells) if cells is not None else ():
        text, white = (f"{value:.2f}", dark(value)) if math.isfinite(value) else ("n/a", False)
        ax.text(j, i, text, ha="center", va="center", fontsize=fontsize, color="white" if white else "black")
    colourbar = ax.get_figure(root=True).colorbar(ax.images[-1], ax=ax, shrink=0.85)
    colourbar.set_label(bar_label, fontsize=FONT)
    colourbar.ax.tick_params(labelsize=FONT)
    figure = _finish(ax, title, "", "")
    ax.grid(False)
    return figure


def cosine_heatmap(matrix: np.ndarray, terms: Sequence[str], ax: Optional[Axes] = None) -> Figure:
    """Median cosine between each pair of terms' shared gradients, colours fixed to [-1, 1], values written in."""
    count = len(terms)
    side = float(np.clip(2.6 + 0.16 * count, SQUARE[0], 11.0))
    ax = _axes(ax, (side, side - 0.8) if count > WRITTEN_CELLS else SQUARE)
    matrix = np.asarray(matrix, dtype=float)
    ax.imshow(matrix, cmap="RdBu", vmin=-1.0, vmax=1.0)
    names = [label(t, 32 if count <= WRITTEN_CELLS else 24) for t in terms]
    ax.set_xticks(range(count), names, rotation=30 if count <= WRITTEN_CELLS else 90, ha="right")
    ax.set_yticks(range(count), names)
    figure = _finish_map(ax, matrix if count <= WRITTEN_CELLS else None, lambda value: abs(value) > 0.6,
                         "median cosine (-1 opposed, 0 unrelated, 1 aligned)", "Gradient cosine between terms")
    ax.tick_params(labelsize=_tick_size(count))
    return figure


def _tick_size(count: int) -> float:
    """Tick labels shrink past WRITTEN_CELLS rows or columns, down to 5 points, so they do not overlap."""
    return FONT if count <= WRITTEN_CELLS else max(5.0, FONT - (count - WRITTEN_CELLS) / 12)


@dataclasses.dataclass(frozen=True)
class CheckCurve:
    """One single-term check: the term's loss trained alone and under the combined loss, from the same start."""

    term: str
    status: str
    alone: np.ndarray
    combined: np.ndarray
    reason: str = ""


def check_curves(curves: Sequence[CheckCurve], ax: Optional[Sequence[Axes]] = None) -> Figure:
    """Small multiples, one panel a term: its loss trained alone against the same term under the combined loss."""
    if ax is None:
        few = len(curves) <= 9
        columns = min(len(curves), 3 if few else 5)
        rows = math.ceil(len(curves) / columns)
        width, height = (2.6, 2.3) if few else (2.0, 1.7)
        figure = Figure(figsize=(width * columns + 0.6, height * rows + 0.4), layout="constrained" if few else None)
        if not few:  # constrained layout over dozens of panels takes minutes; a fixed grid reads as well
            figure.subplots_adjust(left=0.06, right=0.99, bottom=0.5 / (height * rows), top=1 - 0.4 / (height * rows),
                                   wspace=0.45, hspace=0.75)
        panels = list(figure.subplots(rows, columns, squeeze=False).ravel())
        for spare in panels[len(curves):]:
            spare.set_axis_off()
    else:
        panels = list(ax)
    for panel, curve in zip(panels, curves):
        title = f"{label(curve.term, 28 if len(curves) <= 9 else 18)}: {curve.status}"
        alone, combined = np.asarray(curve.alone, dtype=float), np.asarray(curve.combined, dtype=float)
        if not alone.size:
            reason = textwrap.fill(label(curve.reason or "no curve recorded", 90), 30)
            panel.text(0.5, 0.5, reason, ha="center", va="center", fontsize=FONT, transform=panel.transAxes)
            panel.set_xticks([])
            panel.set_yticks([])
            panel.set_title(title, fontsize=FONT + 1, loc="left")
            continue
        _value_scale(panel, np.concatenate([alone, combined]))
        for values, name, k in ((alone, "alone", 0), (combined, "combined", 1)):
            x, y = bucket_mean(np.arange(len(values)), values)
            panel.plot(x, y, linewidth=1.3, markevery=max(1, len(x) // 6), markersize=3.5, label=name, **style(k))
        _finish(panel, title, "step", "loss")
        if len(curves) > 9:
            panel.xaxis.set_major_locator(MaxNLocator(3))
            panel.yaxis.set_minor_locator(NullLocator())
            panel.yaxis.set_minor_formatter(NullFormatter())
    _legend(next((p for p in panels if p.get_lines()), panels[0]))
    return panels[0].get_figure(root=True)


ALPHA_EDGE = 1e-15  # the logit axis spans ALPHA_EDGE..1 - ALPHA_EDGE: matplotlib cannot draw one reaching further


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


def alpha_curve(alphas: np.ndarray, first_share: np.ndarray, suggested: float, current: float,
                terms: Sequence[str], threshold: float, low: Optional[np.ndarray] = None,
                high: Optional[np.ndarray] = None, ax: Optional[Axes] = None) -> Figure:
    """Predicted share of the first term against alpha (logit axis: logarithmic near 0 and near 1), drawn between
    ALPHA_EDGE and 1 - ALPHA_EDGE however far apart the two norms are (a suggestion beyond is named, not marked).

    The suggestion is marked with a dot on the curve, the way Lightning's lr_find marks its learning rate.
    """
    ax = _axes(ax, WIDE)
    alphas, first_share = np.asarray(alphas, dtype=float), np.asarray(first_share, dtype=float)
    drawable = (alphas >= ALPHA_EDGE) & (1 - alphas >= ALPHA_EDGE)
    alphas, first_share = alphas[drawable], first_share[drawable]
    if low is not None and high is not None:
        low, high = np.asarray(low, dtype=float)[drawable], np.asarray(high, dtype=float)[drawable]
    first, second = label(terms[0], 28), label(terms[1], 28)
    ax.set_xscale("logit")
    ax.axhspan(threshold, 1.0, facecolor="none", hatch="///", edgecolor="#bbbbbb", linewidth=0)
    ax.axhspan(0.0, 1.0 - threshold, facecolor="none", hatch="\\\\\\", edgecolor="#bbbbbb", linewidth=0,
               label=f"past the dominance threshold {threshold:g}")
    if low is not None and high is not None:
        ax.fill_between(alphas, low, high, color="#999999", alpha=0.35, linewidth=0,
                        label="quartiles over recorded steps")
    ax.plot(alphas, first_share, color="black", linewidth=1.8, label=f"predicted share of {first}")
    ax.axhline(0.5, color="#555555", linestyle=":", linewidth=1.0)
    logits = np.log(alphas / (1 - alphas))
    for alpha, colour, marker, name in ((current, CURRENT, "s", "current"), (suggested, SUGGESTED, "o", "suggested")):
        if not 0.0 < alpha < 1.0:
            continue
        if not (alpha >= ALPHA_EDGE and 1 - alpha >= ALPHA_EDGE):
            ax.plot([], [], marker=marker, color=colour, linestyle="none",
                    label=f"{name} alpha = {alpha:.4g} (off the axis)")
            continue
        share = float(np.interp(math.log(alpha / (1 - alpha)), logits, first_share))
        ax.axvline(alpha, color=colour, linestyle="--" if name == "suggested" else ":", linewidth=1.0)
        ax.plot([alpha], [share], marker=marker, markersize=9, color=colour, markeredgecolor="black",
                linestyle="none", label=f"{name} alpha = {alpha:.4g}")
    ax.set_xlim(alphas[0], alphas[-1])
    _alpha_ticks(ax, alphas[0])
    ax.set_ylim(0, 1)
    _legend(ax, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _finish(ax, f"Alpha: alpha·{first} + (1 − alpha)·{second}",
                   "alpha (logit axis: logarithmic near 0 and near 1)", f"predicted share of {first}")


def weight_bars(terms: Sequence[str], current: Sequence[float], recommended: Sequence[float],
                ax: Optional[Axes] = None) -> Figure:
    """The weights in force beside the recommended ones (same sum); a log axis when they span decades."""
    crowded = len(terms) > WRITTEN_CELLS
    ax = _axes(ax, (WIDE[0], WIDE[1] + 1.2) if crowded else WIDE)
    current = np.abs(np.asarray(current, dtype=float))
    recommended = np.asarray(recommended, dtype=float)
    x = np.arange(len(terms))
    width = 0.38
    ax.bar(x - width / 2, current, width, color="#dddddd", edgecolor="black", hatch="///", label="in force")
    ax.bar(x + width / 2, recommended, width, color=SUGGESTED, edgecolor="black", label="recommended")
    values = np.concatenate([current, recommended])
    for position, value in zip(np.concatenate([x - width / 2, x + width / 2]), values):
        if value > 0 and not crowded:
            ax.text(position, value, f"{value:.3g}", ha="center", va="bottom", fontsize=FONT - 1)
    positive = values[values > 0]
    if positive.size and positive.max() / positive.min() >= 20:
        ax.set_yscale("log")
    ax.set_xticks(x, [label(t, 24 if crowded else 32) for t in terms], rotation=90 if crowded else 20, ha="right")
    _legend(ax, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    figure = _finish(ax, "Weights: in force and recommended", "", "weight")
    ax.tick_params(axis="x", labelsize=_tick_size(len(terms)))
    return figure


def end_loss_bars(terms: Sequence[str], runs: Sequence[tuple[str, Sequence[Optional[float]]]],
                  starts: Sequence[Optional[float]], ax: Optional[Axes] = None) -> Figure:
    """Each term's loss at the end of each named run, as grouped bars scaled per term by the largest magnitude among
    its start and its ends (so a term that starts at 0 reads as well as one that starts at 4000), each bar labelled
    with the loss in the term's units; a dashed tick marks the start."""
    ax = _axes(ax, WIDE)
    x = np.arange(len(terms))
    width = 0.8 / max(1, len(runs))
    table = np.array([_nan_floats(values) for _, values in runs], dtype=float).reshape(len(runs), len(terms))
    start = _nan_floats(starts)
    magnitudes = np.abs(np.vstack([table, start[None, :]]))
    scale = np.where(np.isfinite(magnitudes), magnitudes, -np.inf).max(axis=0)
    scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
    for r, (name, _) in enumerate(runs):
        positions = x - 0.4 + width * (r + 0.5)
        heights = table[r] / scale
        ax.bar(positions, np.nan_to_num(heights), width, color=COLOURS[r % len(COLOURS)], edgecolor="black",
               hatch=HATCHES[r % len(HATCHES)], label=name)
        for position, height, value in zip(positions, heights, table[r]):
            if math.isfinite(value):
                ax.text(position, max(height, 0.0), f"{value:.3g}", ha="center", va="bottom", fontsize=FONT - 1)
    for k, level in enumerate(start / scale):
        if math.isfinite(level):
            ax.hlines(level, k - 0.45, k + 0.45, colors="black", linestyles="--", linewidth=1.0,
                      label="start" if k == 0 else None)
    ax.axhline(0.0, color="black", linewidth=0.6)
    ax.set_xticks(x, [label(t, 32) for t in terms], rotation=20, ha="right")
    _legend(ax, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _finish(ax, "Each term's loss at the end of each run", "", "end loss / the term's largest")


def layer_map(modules: Sequence[str], terms: Sequence[str], shares: np.ndarray, ax: Optional[Axes] = None) -> Figure:
    """Each term's share of the weighted gradient in each shared module (rows: modules, columns: terms)."""
    shares = np.asarray(shares, dtype=float)
    count = len(terms)
    height = float(np.clip(1.2 + 0.3 * len(modules), 2.6, 14.0)) + (1.0 if count > WRITTEN_CELLS else 0.0)
    width = 1.6 + 1.0 * count if count <= WRITTEN_CELLS else 2.6 + 0.16 * count
    ax = _axes(ax, (float(np.clip(width, 3.6, 11.0)), height))
    ax.imshow(shares, cmap="cividis", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(count), [label(t, 32 if count <= WRITTEN_CELLS else 24) for t in terms],
                  rotation=30 if count <= WRITTEN_CELLS else 90, ha="right")
    ax.set_yticks(range(len(modules)), [label(m, 36) for m in modules])
    written = shares.size <= 160 and count <= WRITTEN_CELLS
    figure = _finish_map(ax, shares if written else None, lambda value: value <= 0.6,
                         "share of the module's gradient", "Share of each shared module's gradient", FONT - 1)
    ax.tick_params(axis="x", labelsize=_tick_size(count))
    return figure


@dataclasses.dataclass(frozen=True)
class ReportFigure:
    """One figure of the report as a PNG, or the reason it was left out."""

    name: str
    title: str
    caption: str
    png: Optional[bytes] = None
    note: str = ""


DPI = 110
MIN_DPI = 60
MAX_PIXELS = 800_000
FIGURES_BUDGET = 1_200_000
FIGURE_NAMES = ("losses", "shares", "grad_norms", "cosines", "checks", "progress", "alpha", "weights", "layers")


def png_bytes(figure: Figure, dpi: int = DPI) -> bytes:
    """A figure as PNG bytes, without the software tag, so the same figure gives the same file; a large figure
    (many terms) gets a lower resolution, at most MAX_PIXELS, so the page stays small."""
    width, height = figure.get_size_inches()
    dpi = min(dpi, int(math.sqrt(MAX_PIXELS / (width * height))))
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    return buffer.getvalue()


def drawn_figure(name: str, title: str, caption: str, draw: Callable[[], Figure], dpi: int = DPI) -> ReportFigure:
    """The figure `draw` makes as a PNG, or, when drawing it fails, the figure left out with the error as its note:
    a figure that cannot be drawn never costs the run its summary or its report."""
    try:
        return ReportFigure(name, title, caption, png_bytes(draw(), dpi))
    except Exception as exc:  # matplotlib raises many kinds on extreme data (LinAlgError, OverflowError, ValueError)
        reason = " ".join(str(exc).split())[:160]
        return ReportFigure(name, title, caption, note=f"could not be drawn: {type(exc).__name__}: {reason}")


def _nan_floats(values: Sequence[Optional[float]]) -> np.ndarray:
    return np.array([math.nan if v is None else v for v in values], dtype=float)


def _check_curves(diagnosis: Diagnosis) -> list[CheckCurve]:
    run = diagnosis.run
    curves = []
    for record in run.extra.get("check", []):
        term = str(record.get("term", ""))
        alone = _nan_floats(record.get("losses") or [])
        k = run.terms.index(term) if term in run.terms else None
        combined = run.losses[: len(alone), k] if k is not None else np.array([])
        status, reason = str(record.get("status", "")), str(record.get("reason") or "")
        curves.append(CheckCurve(term, status, alone, combined, reason))
    return curves


def _layer_shares(summary: dict, terms: Sequence[str]) -> tuple[list[str], np.ndarray]:
    layers = summary.get("layers") or {}
    modules = list(layers)
    shares = np.array([_nan_floats([layers[m].get(t) for t in terms]) for m in modules])
    return modules, shares.reshape(-1, len(terms))


def report_figures(diagnosis: Diagnosis, summary: dict) -> list[ReportFigure]:
    """Every figure of the report, in page order, drawn from a run's diagnosis and its summary."""
    run = diagnosis.run
    terms = run.terms
    shared = [k for k, t in enumerate(terms) if t in run.shared_terms]
    has_grads = bool(len(run.grad_steps)) and len(shared) >= 2
    series = diagnosis.dominance.share_series
    finite_columns = np.isfinite(series).any(axis=0)
    complete_rows = np.isfinite(series[:, finite_columns]).all(axis=1)
    has_shares = has_grads and int(finite_columns.sum()) >= 2 and bool(complete_rows.any())
    no_grads = "no recorded gradient of two terms on shared parameters"
    figures = []

    draws: dict[str, Callable[[], Figure]] = {}

    def add(name: str, title: str, caption: str, draw: Optional[Callable[[], Figure]], note: str = "") -> None:
        figures.append(drawn_figure(name, title, caption, draw) if draw is not None
                       else ReportFigure(name, title, caption, note=note))
        if draw is not None:
            draws[name] = draw

    add("losses", "Loss curves", "Each term's loss at every step, on a log axis. A term that stays flat while "
        "the others fall is being drowned.",
        (lambda: loss_curves(run.loss_steps, run.losses, terms)) if len(run.loss_steps) else None,
        "no training step recorded")
    add("shares", "Share of the shared gradient", "How much of the weighted gradient on the shared parameters each "
        "term supplies, per recorded step. A band thicker than the dashed threshold drowns the others.",
        (lambda: share_area(run.grad_steps, series, terms, diagnosis.dominance.threshold)) if has_shares else None,
        "fewer than two terms have a usable gradient on shared parameters")
    shared_norms = np.where(run.on_shared, run.norms, np.nan)
    add("grad_norms", "Gradient norms", "Each term's unweighted gradient norm on the shared parameters, on a log "
        "axis. Norms orders of magnitude apart need weights orders of magnitude apart to balance.",
        (lambda: grad_norms(run.grad_steps, shared_norms, terms)) if has_grads else None, no_grads)
    add("cosines", "Gradient cosines", "Median cosine between two terms' gradients on the shared parameters. Near 0 "
        "is normal for unrelated terms; near -1 means they pull the shared parameters in opposite directions.",
        (lambda: cosine_heatmap(diagnosis.cosines[np.ix_(shared, shared)], [terms[k] for k in shared]))
        if has_grads else None, no_grads)
    curves = _check_curves(diagnosis)
    add("checks", "Single-term checks", "Each term trained alone from the same start (solid) against the same term "
        "under the combined loss (dashed). A term that falls alone but not combined is starved.",
        (lambda: check_curves(curves)) if curves else None, "no single-term checks in this run")
    outcome, situations = summary.get("outcome"), summary.get("situations") or {}
    if outcome is not None:
        runs = [("alone", [situations.get(t, {}).get("alone") for t in terms]),
                ("weights in force", [outcome["in_force"].get(t) for t in terms])]
        if outcome.get("chosen") is not None:
            runs.append(("recommended", [outcome["candidates"][outcome["chosen"]]["end"].get(t) for t in terms]))
        starts = [situations.get(t, {}).get("start") for t in terms]
        add("progress", "Loss at the end under each weighting", f"Each term's mean loss on the {outcome['on']} "
            "batches after the same steps from the same start: trained alone, under the weights in force and under "
            "the recommended weights; each term's bars are scaled by its largest value and labelled in its own "
            "units, the dashed tick is its start.", lambda: end_loss_bars(terms, runs, starts))
    curve = diagnosis.alpha_curve
    if curve is not None:
        add("alpha", "Alpha curve", "The share of the first term that each alpha would give, predicted from the "
            "recorded gradient norms without retraining. The dot marks the suggested alpha, the square the "
            "current one.",
            lambda: alpha_curve(curve.alphas, curve.first_share, curve.suggested_alpha, curve.current_alpha, terms,
                                diagnosis.dominance.threshold, getattr(curve, "first_share_low", None),
                                getattr(curve, "first_share_high", None)))
    else:
        current = [diagnosis.current_weights.get(t, 1.0) for t in terms]
        recommended = [(summary.get("recommended_weights") or diagnosis.current_weights).get(t, 1.0) for t in terms]
        if current != recommended:
            add("weights", "Recommended weights", "The weights in force beside the recommended ones (their sum "
                "kept); the axis is logarithmic when they span decades.",
                (lambda: weight_bars(terms, current, recommended)) if len(terms) >= 2 else None,
                "one term: there is no balance to recommend")
    modules, shares = _layer_shares(summary, terms)
    add("layers", "Per-layer map", "For each shared module, each term's share of its weighted gradient: where in "
        "the network one term takes over.",
        (lambda: layer_map(modules, terms, shares)) if has_grads and modules else None,
        "no per-module gradient recorded")
    return within_budget(figures, draws)


def within_budget(figures: list[ReportFigure], draws: Mapping[str, Callable[[], Figure]]) -> list[ReportFigure]:
    """Redraw the largest figure at a lower resolution until all fit in FIGURES_BUDGET bytes (the page stays
    under 2 MB once they are base64 text), never below MIN_DPI."""
    dpis = {figure.name: DPI for figure in figures}
    while sum(len(f.png or b"") for f in figures) > FIGURES_BUDGET:
        shrinkable = [i for i, f in enumerate(figures) if f.png is not None and dpis[f.name] > MIN_DPI]
        if not shrinkable:
            break
        index = max(shrinkable, key=lambda i: len(figures[i].png))
        name = figures[index].name
        dpis[name] = max(MIN_DPI, int(dpis[name] * 0.8))
        figure = figures[index]
        figures[index] = drawn_figure(name, figure.title, figure.caption, draws[name], dpis[name])
    return figures
