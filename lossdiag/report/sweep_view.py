"""The sweep as plain objects built from sweep.json's content: the verdict, the line to paste, what was run and the
table of points. The terminal (sweep_terminal.py) and sweep.html (sweep_html.py) render these."""
from __future__ import annotations

import math
import shlex
from typing import Optional

from lossdiag.report.blocks import Table
from lossdiag.report.text import number, readable_drop, safe, term_text


def alpha_text(alpha: float) -> str:
    """Alpha with three significant digits of whichever of alpha and 1 - alpha is smaller (0.99967, not 1)."""
    if not 0.0 < alpha < 1.0:
        return number(alpha)
    decimals = max(0, math.ceil(-math.log10(min(alpha, 1.0 - alpha)))) + 2
    return f"{alpha:.{decimals}f}".rstrip("0").rstrip(".")


def point_name(point: dict, terms: list[str]) -> str:
    """How a point is named in tables: its alpha for two terms, else which term was scaled and by what."""
    if point.get("alpha") is not None:
        return f"alpha {alpha_text(point['alpha'])}"
    if point.get("scaled") is None:
        return "suggestion" if not point.get("current") else "in force"
    return f"{term_text(point['scaled'])} x{number(point['factor'], 3)}"


def weights_text(weights: dict, terms: list[str], separator: str = ",") -> str:
    """Weights as --weights takes them (name=value,...), to 3 significant digits."""
    return separator.join(f"{term_text(t)}={number(weights[t], 3)}" for t in terms)


def paste_lines(sweep: dict, model_path: Optional[str] = None) -> list[str]:
    """The recommended weights as a line to paste, alpha in the forum's form, and the command that checks them."""
    index = sweep["recommended"]
    if index is None or sweep.get("kept"):
        return []
    point, terms = sweep["points"][index], sweep["terms"]
    weights = point["weights"]
    lines = [f"loss_total = {' + '.join(f'{number(weights[t], 3)} * {term_text(t)}' for t in terms)}"]
    if point.get("alpha") is not None:
        lines.append(f"alpha = {alpha_text(point['alpha'])} in alpha * {term_text(terms[0])} + (1 - alpha) * "
                     f"{term_text(terms[1])}")
    if model_path:
        lines.append(f"check it: lossdiag profile {shlex.quote(safe(model_path))} "
                     f"--weights {shlex.quote(weights_text(weights, terms))} --check-steps {sweep['sweep_steps']} "
                     f"--seed {sweep['seed']}")
    return lines


def verdict(sweep: dict) -> str:
    """One line: which point is recommended, by what rule, and how it compares with the weights in force."""
    index = sweep["recommended"]
    if index is None:
        return ("no point can be recommended: every point has a missing or non-finite "
                f"{'metric' if sweep['metric'] else 'progress'}; see the table")
    point, terms = sweep["points"][index], sweep["terms"]
    if sweep.get("kept"):
        return (f"keep the weights in force: no point qualifies under the rule ({point_name(point, terms)} is the "
                f"weights in force); see the table for what each point costs, or choose with --metric")
    progress = ", ".join(f"{term_text(t)} {readable_drop(point['progress'][t])}" for t in terms)
    text = f"recommended: {point_name(point, terms)} ({progress} progress"
    current = next((p for p in sweep["points"] if p.get("current")), None)
    if current is not None and current is not point:
        text += "; under the weights in force: " + ", ".join(
            f"{term_text(t)} {readable_drop(current['progress'][t])}" for t in terms)
    return text + f"), chosen by {safe(sweep['criterion'])}"


def judged_on(probe: dict) -> str:
    """Which batches the sweep measured progress on: the model file's validation batches or the probe batches."""
    return "validation batches" if probe.get("on") == "validation" else "fixed probe batches"


def points_table(sweep: dict) -> Table:
    """Header and rows of the points table: name, weights, each term's progress, metrics, score, marks."""
    terms = sweep["terms"]
    metrics = list(next((p["metrics"] for p in sweep["points"] if p.get("metrics")), {}) or {})
    header = ["point", "weights", *(f"{term_text(t)} progress" for t in terms), *map(safe, metrics), "score", "marks"]
    rows = []
    for k, point in enumerate(sweep["points"]):
        marks = ["recommended"] if k == sweep["recommended"] else []
        marks += ["Pareto"] if k in sweep["pareto"] else []
        marks += ["in force"] if point.get("current") else []
        rows.append((point_name(point, terms), weights_text(point["weights"], terms, ", "),
                     *(readable_drop(point["progress"][t]) for t in terms),
                     *(number((point.get("metrics") or {}).get(m)) for m in metrics),
                     number(point.get("score"), 3), ", ".join(marks)))
    return Table(tuple(header), tuple(rows), text_columns=2)


def context_line(sweep: dict) -> str:
    """What was run: points, steps, probe and the alone runs."""
    alone = ", ".join(f"{term_text(t)} {readable_drop(v)}" for t, v in sweep["alone"].items())
    return (f"{len(sweep['points'])} of {sweep['planned_points']} points, each trained {sweep['sweep_steps']} steps "
            f"from the same start on the same batches; progress on {sweep['probe']['batches']} "
            f"{judged_on(sweep['probe'])}; "
            f"each term trained alone: {alone}")
