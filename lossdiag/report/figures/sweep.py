"""The sweep's figure (sweep.png) from sweep.json's content: progress and metrics against the weights, and the
Pareto front. `sweep_info` lays out the panels as plain data; `draw_sweep` only draws them.

Two terms: each term's progress against alpha (logit axis: logarithmic near 0 and near 1), the Pareto front
(term 1 against term 2, points labelled by alpha) and one panel per metric. More terms: the same against each
scaled term's factor (log axis). The recommended point is a large dot, the weights in force a square.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from lossdiag.report.figures.png import ReportFigure, drawn_figure
from lossdiag.report.figures.theme import CURRENT, FONT, SUGGESTED, colour, finish, label, legend, style
from lossdiag.report.sweep_view import alpha_text, judged_on

MAX_METRIC_PANELS = 4
RECOMMENDED, IN_FORCE = "recommended", "weights in force"


@dataclasses.dataclass(frozen=True)
class Line:
    """One drawn series: a term's or metric's line in the k-th style, a level (a term trained alone), the grey
    points or the Pareto front."""

    name: str
    x: tuple[float, ...]
    y: tuple[float, ...]
    k: int = 0
    kind: str = "line"


@dataclasses.dataclass(frozen=True)
class Panel:
    """One panel: its axes' words and x scale, its lines, the marks (recommended, weights in force) and the
    points' labels."""

    title: str
    xlabel: str
    ylabel: str
    xscale: str
    lines: tuple[Line, ...]
    marks: tuple[tuple[str, float, float], ...] = ()
    labels: tuple[tuple[str, float, float], ...] = ()


def progress_label(probe: dict) -> str:
    """The progress axis's label, naming the batches progress was measured on."""
    return f"progress (relative drop on the {judged_on(probe)})"


def metric_names(sweep: dict) -> list[str]:
    """The metrics drawn: --metric first, then the others, at most MAX_METRIC_PANELS."""
    names = list(next((p["metrics"] for p in sweep["points"] if p.get("metrics")), {}) or {})
    if sweep.get("metric") in names:
        names.remove(sweep["metric"])
        names.insert(0, sweep["metric"])
    return names[:MAX_METRIC_PANELS]


def _value(point: dict, key: str, name: str) -> float:
    value = (point.get(key) or {}).get(name)
    return math.nan if value is None else float(value)


Mark = tuple[str, float, float]


def _marks(sweep: dict, x: Sequence[float], y: Sequence[float], indices: Sequence[int]) -> list[Mark]:
    """The recommended point and the weights in force where they are among `indices` and drawn."""
    marks = []
    for position, k in enumerate(indices):
        if not math.isfinite(y[position]):
            continue
        if k == sweep["recommended"]:
            marks.append((RECOMMENDED, x[position], y[position]))
        if sweep["points"][k].get("current"):
            marks.append((IN_FORCE, x[position], y[position]))
    return marks


def _against(sweep: dict, indices: Sequence[int], x: Sequence[float], key: str, names: Sequence[str],
             alone: bool) -> tuple[list[Line], list[Mark]]:
    """One line per name (a term's progress or a metric) over the points `indices`, a level for each term trained
    alone, and the marks on every progress line (on the first metric line)."""
    lines, marks = [], []
    for k, name in enumerate(names):
        y = [_value(sweep["points"][i], key, name) for i in indices]
        lines.append(Line(label(name, 28), tuple(x), tuple(y), k))
        level = sweep["alone"].get(name) if alone else None
        if level is not None:
            lines.append(Line(f"{label(name, 20)} trained alone", (), (level,), k, "level"))
        if k == 0 or key == "progress":
            marks += _marks(sweep, x, y, indices)
    return lines, marks


def _pareto(sweep: dict) -> Panel:
    first, second = sweep["terms"]
    points = sweep["points"]
    xs = [_value(p, "progress", first) for p in points]
    ys = [_value(p, "progress", second) for p in points]
    front = sorted(sweep["pareto"], key=lambda k: xs[k])
    lines = (Line("points", tuple(xs), tuple(ys), kind="points"),
             Line("Pareto front", tuple(xs[k] for k in front), tuple(ys[k] for k in front), kind="front"))
    labels = tuple((alpha_text(p["alpha"]), xs[k], ys[k]) for k, p in enumerate(points)
                   if math.isfinite(xs[k]) and math.isfinite(ys[k]))
    return Panel("Pareto front (points labelled by alpha)", f"progress of {label(first, 28)}",
                 f"progress of {label(second, 28)}", "linear", lines,
                 tuple(_marks(sweep, xs, ys, range(len(points)))), labels)


def _two_terms(sweep: dict, metrics: list[str]) -> list[Panel]:
    order = sorted(range(len(sweep["points"])), key=lambda k: sweep["points"][k]["alpha"])
    alphas = [sweep["points"][k]["alpha"] for k in order]
    first, second = (label(t, 24) for t in sweep["terms"])
    axis = f"alpha in alpha·{first} + (1 − alpha)·{second} (logit axis)"
    lines, marks = _against(sweep, order, alphas, "progress", sweep["terms"], alone=True)
    panels = [Panel("Each term's progress against alpha", axis, progress_label(sweep["probe"]), "logit",
                    tuple(lines), tuple(marks)), _pareto(sweep)]
    for metric in metrics:
        lines, marks = _against(sweep, order, alphas, "metrics", [metric], alone=False)
        panels.append(Panel(f"{label(metric, 40)} from validate(model)", axis, label(metric, 40), "logit",
                            tuple(lines), tuple(marks)))
    return panels


def _scaled_terms(sweep: dict, metrics: list[str]) -> list[Panel]:
    points, terms = sweep["points"], sweep["terms"]
    centre = [k for k, p in enumerate(points) if p.get("scaled") is None and not p.get("current")]
    series = {}
    for term in terms:
        indices = sorted(centre + [k for k, p in enumerate(points) if p.get("scaled") == term],
                         key=lambda k: points[k]["factor"])
        series[term] = (indices, [points[k]["factor"] for k in indices])
    panels = []
    for term in terms:
        indices, factors = series[term]
        lines, marks = _against(sweep, indices, factors, "progress", terms, alone=True)
        name = label(term, 28)
        panels.append(Panel(f"Progress as {name}'s weight is scaled", f"factor on {name}'s weight",
                            progress_label(sweep["probe"]), "log", tuple(lines), tuple(marks)))
    for metric in metrics:
        lines = tuple(Line(f"scaling {label(term, 24)}", tuple(series[term][1]),
                           tuple(_value(points[i], "metrics", metric) for i in series[term][0]), k)
                      for k, term in enumerate(terms))
        panels.append(Panel(f"{label(metric, 40)} from validate(model)", "factor on the scaled term's weight",
                            label(metric, 40), "log", lines))
    return panels


def sweep_info(sweep: dict) -> tuple[Panel, ...]:
    """The sweep figure's panels for two terms (against alpha, with the Pareto front) or more (against factors)."""
    metrics = metric_names(sweep)
    return tuple(_two_terms(sweep, metrics) if len(sweep["terms"]) == 2 else _scaled_terms(sweep, metrics))


def _draw_panel(ax: Axes, panel: Panel) -> None:
    if panel.xscale != "linear":
        ax.set_xscale(panel.xscale)
    for line in panel.lines:
        if line.kind == "level":
            ax.axhline(line.y[0], color=colour(line.k), linestyle=":", linewidth=1.0, label=line.name)
        elif line.kind == "points":
            ax.plot(line.x, line.y, "o", color="#999999", markersize=5, label=line.name)
        elif line.kind == "front":
            ax.plot(line.x, line.y, "-o", color="black", markersize=5, label=line.name)
        else:
            ax.plot(line.x, line.y, linewidth=1.4, markersize=4, label=line.name, **style(line.k))
    for text, x, y in panel.labels:
        ax.annotate(text, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=FONT - 1.5)
    for name, x, y in panel.marks:
        recommended = name == RECOMMENDED
        ax.plot([x], [y], "o" if recommended else "s", markersize=11 if recommended else 9,
                color=SUGGESTED if recommended else CURRENT, markeredgecolor="black", zorder=5 if recommended else 4,
                label=name)
    legend(ax, unique=True, size=FONT - 1)
    finish(ax, panel.title, panel.xlabel, panel.ylabel)


def draw_sweep(panels: Sequence[Panel]) -> Figure:
    """The panels in two columns (one when there is one)."""
    columns = 2 if len(panels) > 1 else 1
    rows = math.ceil(len(panels) / columns)
    figure = Figure(figsize=(4.6 * columns, 3.3 * rows), layout="constrained")
    axes = list(figure.subplots(rows, columns, squeeze=False).ravel())
    for spare in axes[len(panels):]:
        spare.set_axis_off()
    for ax, panel in zip(axes, panels):
        _draw_panel(ax, panel)
    return figure


def sweep_figures(sweep: dict) -> list[ReportFigure]:
    """The page's figure as a PNG, or why it is not drawn (no point finished yet)."""
    title = "Sweep"
    caption = (f"Each point trained from the same start on the same batches for {sweep['sweep_steps']} steps. "
               f"Progress is each term's relative drop on the same {judged_on(sweep['probe'])} (dotted: the term "
               "trained alone); the large dot is the recommended point, the square the weights in force.")
    if not sweep["points"]:
        return [ReportFigure("sweep", title, caption, note="no point finished")]
    return [drawn_figure("sweep", title, caption, lambda: draw_sweep(sweep_info(sweep)))]
