"""The sweep's figure (sweep.png): progress and metrics against the weights, and the Pareto front.

Two terms: each term's progress against alpha (logit axis: logarithmic near 0 and near 1), the Pareto front
(term 1 against term 2, points labelled by alpha) and one panel per metric. More terms: the same against each
scaled term's factor (log axis). The recommended point is a large dot, the weights in force a square.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from lossdiag.report.figures import CURRENT, FONT, SUGGESTED, ReportFigure, _finish, _legend, drawn_figure, label, style
from lossdiag.report.sweep_terminal import alpha_text, judged_on
from lossdiag.sweep.records import SweepData

MAX_METRIC_PANELS = 4


def progress_label(data: SweepData) -> str:
    """The progress axis's label, naming the batches progress was measured on."""
    return f"progress (relative drop on the {judged_on(data.meta['probe'])})"


def _value(point: dict, key: str, name: str) -> float:
    value = (point.get(key) or {}).get(name)
    return math.nan if value is None else float(value)


def _marks(ax: Axes, x: Sequence[float], y: Sequence[float], points: Sequence[dict], recommended: Optional[int],
           indices: Sequence[int]) -> None:
    """A large dot on the recommended point and a square on the weights in force, where they are drawn."""
    for position, k in enumerate(indices):
        if not math.isfinite(y[position]):
            continue
        if k == recommended:
            ax.plot([x[position]], [y[position]], "o", markersize=11, color=SUGGESTED, markeredgecolor="black",
                    zorder=5, label="recommended")
        if points[k].get("current"):
            ax.plot([x[position]], [y[position]], "s", markersize=9, color=CURRENT, markeredgecolor="black",
                    zorder=4, label="weights in force")


def _against(ax: Axes, data: SweepData, indices: Sequence[int], x: Sequence[float], key: str,
             names: Sequence[str], alone: bool) -> None:
    """One line per name (a term's progress or a metric) over the points `indices`, with the marks on the first."""
    for k, name in enumerate(names):
        y = [_value(data.points[i], key, name) for i in indices]
        ax.plot(x, y, linewidth=1.4, markersize=4, label=label(name, 28), **style(k))
        if alone and data.alone.get(name) is not None:
            ax.axhline(data.alone[name], color=style(k)["color"], linestyle=":", linewidth=1.0,
                       label=f"{label(name, 20)} trained alone")
        if k == 0 or key == "progress":
            _marks(ax, x, y, data.points, data.choice.index, indices)


def _dedupe_legend(ax: Axes) -> None:
    handles, names = ax.get_legend_handles_labels()
    unique = dict(zip(names, handles))
    if unique:
        ax.legend(unique.values(), unique.keys(), fontsize=FONT - 1, frameon=False)


def _pareto(ax: Axes, data: SweepData) -> Figure:
    first, second = data.terms
    xs = [_value(p, "progress", first) for p in data.points]
    ys = [_value(p, "progress", second) for p in data.points]
    ax.plot(xs, ys, "o", color="#999999", markersize=5, label="points")
    front = sorted(data.pareto, key=lambda k: xs[k])
    ax.plot([xs[k] for k in front], [ys[k] for k in front], "-o", color="black", markersize=5,
            label="Pareto front")
    for k, point in enumerate(data.points):
        if math.isfinite(xs[k]) and math.isfinite(ys[k]):
            ax.annotate(alpha_text(point["alpha"]), (xs[k], ys[k]), textcoords="offset points", xytext=(4, 4),
                        fontsize=FONT - 1.5)
    _marks(ax, xs, ys, data.points, data.choice.index, range(len(data.points)))
    _dedupe_legend(ax)
    return _finish(ax, "Pareto front (points labelled by alpha)", f"progress of {label(first, 28)}",
                   f"progress of {label(second, 28)}")


def _panels(count: int) -> list[Axes]:
    columns = 2 if count > 1 else 1
    rows = math.ceil(count / columns)
    figure = Figure(figsize=(4.6 * columns, 3.3 * rows), layout="constrained")
    panels = list(figure.subplots(rows, columns, squeeze=False).ravel())
    for spare in panels[count:]:
        spare.set_axis_off()
    return panels[:count]


def _two_terms(data: SweepData, metrics: list[str]) -> Figure:
    panels = _panels(2 + len(metrics))
    order = sorted(range(len(data.points)), key=lambda k: data.points[k]["alpha"])
    alphas = [data.points[k]["alpha"] for k in order]
    first, second = (label(t, 24) for t in data.terms)
    axis = f"alpha in alpha·{first} + (1 − alpha)·{second} (logit axis)"
    ax = panels[0]
    ax.set_xscale("logit")
    _against(ax, data, order, alphas, "progress", data.terms, alone=True)
    _dedupe_legend(ax)
    _finish(ax, "Each term's progress against alpha", axis, progress_label(data))
    _pareto(panels[1], data)
    for ax, metric in zip(panels[2:], metrics):
        ax.set_xscale("logit")
        _against(ax, data, order, alphas, "metrics", [metric], alone=False)
        _dedupe_legend(ax)
        _finish(ax, f"{label(metric, 40)} from validate(model)", axis, label(metric, 40))
    return panels[0].get_figure(root=True)


def _scaled_terms(data: SweepData, metrics: list[str]) -> Figure:
    panels = _panels(len(data.terms) + len(metrics))
    centre = [k for k, p in enumerate(data.points) if p.get("scaled") is None and not p.get("current")]
    series = {}
    for term in data.terms:
        indices = sorted(centre + [k for k, p in enumerate(data.points) if p.get("scaled") == term],
                         key=lambda k: data.points[k]["factor"])
        series[term] = (indices, [data.points[k]["factor"] for k in indices])
    for ax, term in zip(panels, data.terms):
        indices, factors = series[term]
        ax.set_xscale("log")
        _against(ax, data, indices, factors, "progress", data.terms, alone=True)
        _dedupe_legend(ax)
        _finish(ax, f"Progress as {label(term, 28)}'s weight is scaled", f"factor on {label(term, 28)}'s weight",
                progress_label(data))
    for ax, metric in zip(panels[len(data.terms):], metrics):
        ax.set_xscale("log")
        for k, term in enumerate(data.terms):
            indices, factors = series[term]
            ax.plot(factors, [_value(data.points[i], "metrics", metric) for i in indices], linewidth=1.4,
                    markersize=4, label=f"scaling {label(term, 24)}", **style(k))
        _legend(ax)
        _finish(ax, f"{label(metric, 40)} from validate(model)", "factor on the scaled term's weight",
                label(metric, 40))
    return panels[0].get_figure(root=True)


def metric_names(data: SweepData) -> list[str]:
    """The metrics drawn: --metric first, then the others, at most MAX_METRIC_PANELS."""
    names = list(next((p["metrics"] for p in data.points if p.get("metrics")), {}) or {})
    if data.metric in names:
        names.remove(data.metric)
        names.insert(0, data.metric)
    return names[:MAX_METRIC_PANELS]


def sweep_figure(data: SweepData) -> Figure:
    """The whole sweep figure for two terms or more."""
    metrics = metric_names(data)
    return _two_terms(data, metrics) if len(data.terms) == 2 else _scaled_terms(data, metrics)


def sweep_figures(data: SweepData) -> list[ReportFigure]:
    """The page's figure as a PNG, or why it is not drawn (no point finished yet)."""
    title = "Sweep"
    caption = ("Each point trained from the same start on the same batches for "
               f"{data.meta['config']['sweep_steps']} steps. Progress is each term's relative drop on the same "
               f"{judged_on(data.meta['probe'])} (dotted: the term trained alone); the large dot is the recommended "
               "point, the square the weights in force.")
    if not data.points:
        return [ReportFigure("sweep", title, caption, note="no point finished")]
    return [drawn_figure("sweep", title, caption, lambda: sweep_figure(data))]
