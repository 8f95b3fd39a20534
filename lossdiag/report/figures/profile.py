"""The profile's figures: which to draw for a run, each one's title and caption, and its info object built from
the run's diagnosis and summary (`figure_plan`); `report_figures` draws the plan as PNGs in page order."""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Optional

import numpy as np
from matplotlib.figure import Figure

from lossdiag.advise.diagnose import Diagnosis
from lossdiag.report.figures.draw import check_curves, draw_cosines, draw_layers, draw_series, draw_shares
from lossdiag.report.figures.draw_outcome import draw_alpha, draw_end_losses, draw_weights
from lossdiag.report.figures.info import checks_info, cosines_info, layers_info, series_info, shares_info
from lossdiag.report.figures.outcome_info import alpha_info, end_loss_info, outcome_runs, weights_info
from lossdiag.report.figures.png import ReportFigure, drawn_figure, within_budget
from lossdiag.report.figures.theme import WRITTEN_CELLS

FIGURE_NAMES = ("losses", "shares", "grad_norms", "cosines", "checks", "progress", "alpha", "weights", "layers")
NO_GRADIENTS = "no recorded gradient of two terms on shared parameters"


@dataclasses.dataclass(frozen=True)
class PlannedFigure:
    """A figure of the report: its name (the PNG's), title, caption, and the info it plots, or why it has none."""

    name: str
    title: str
    caption: str
    info: Any = None
    note: str = ""


def planned(name: str, title: str, caption: str, build: Optional[Callable[[], Any]], note: str = "") -> PlannedFigure:
    """A figure with the info `build` makes (None: not drawn, for `note`); a build that fails leaves the figure out
    with the error as its note, as drawn_figure does for a drawing, so a figure never costs the run its report."""
    if build is None:
        return PlannedFigure(name, title, caption, note=note)
    try:
        return PlannedFigure(name, title, caption, build())
    except Exception as exc:  # numpy and the summary's shapes on extreme or damaged runs
        return PlannedFigure(name, title, caption, note=f"could not be drawn: {type(exc).__name__}: {exc}"[:200])


DRAW: dict[str, Callable[[Any], Figure]] = {
    "losses": lambda info: draw_series(info, "Loss of each term", "loss (unweighted)"),
    "shares": draw_shares,
    "grad_norms": lambda info: draw_series(info, "Gradient norm on the shared parameters",
                                           "gradient norm (unweighted)"),
    "cosines": draw_cosines,
    "checks": check_curves,
    "progress": draw_end_losses,
    "alpha": draw_alpha,
    "weights": draw_weights,
    "layers": draw_layers,
}


def _run_figures(diagnosis: Diagnosis) -> list[PlannedFigure]:
    """The figures of what was recorded: losses, shares, gradient norms, cosines and the single-term checks."""
    run, terms = diagnosis.run, diagnosis.run.terms
    shared = [k for k, t in enumerate(terms) if t in run.shared_terms]
    has_grads = bool(len(run.grad_steps)) and len(shared) >= 2
    series = diagnosis.dominance.share_series
    finite_columns = np.isfinite(series).any(axis=0)
    has_shares = (has_grads and int(finite_columns.sum()) >= 2
                  and bool(np.isfinite(series[:, finite_columns]).all(axis=1).any()))
    norms = np.where(run.on_shared & (run.norms > 0), run.norms, np.nan)
    checks = run.extra.get("check", [])
    return [
        planned("losses", "Loss curves", "Each term's loss at every step, on a log axis. A term that stays flat "
                      "while the others fall is being drowned.",
                      (lambda: series_info(run.loss_steps, run.losses, terms)) if len(run.loss_steps) else None,
                      "no training step recorded"),
        planned("shares", "Share of the shared gradient", "How much of the weighted gradient on the shared "
                      "parameters each term supplies, per recorded step. A band thicker than the dashed threshold "
                      "drowns the others.",
                      (lambda: shares_info(run.grad_steps, series, terms, diagnosis.dominance.threshold))
                      if has_shares else None,
                      "fewer than two terms have a usable gradient on shared parameters"),
        planned("grad_norms", "Gradient norms", "Each term's unweighted gradient norm on the shared parameters, "
                      "on a log axis. Norms orders of magnitude apart need weights orders of magnitude apart to "
                      "balance.", (lambda: series_info(run.grad_steps, norms, terms)) if has_grads else None,
                      NO_GRADIENTS),
        planned("cosines", "Gradient cosines", "Median cosine between two terms' gradients on the shared "
                      "parameters. Near 0 is normal for unrelated terms; near -1 means they pull the shared "
                      "parameters in opposite directions.",
                      (lambda: cosines_info(diagnosis.cosines[np.ix_(shared, shared)], [terms[k] for k in shared],
                                            WRITTEN_CELLS)) if has_grads else None, NO_GRADIENTS),
        planned("checks", "Single-term checks", "Each term trained alone from the same start (solid) against "
                      "the same term under the combined loss (dashed). A term that falls alone but not combined is "
                      "starved.", (lambda: checks_info(checks, terms, run.losses)) if checks else None,
                      "no single-term checks in this run"),
    ]


def _advice_figures(diagnosis: Diagnosis, summary: dict) -> list[PlannedFigure]:
    """The figures of the advice: end losses under each weighting, the alpha curve or the weights, the layers."""
    terms, figures = diagnosis.run.terms, []
    outcome = summary.get("outcome")
    if outcome is not None:
        figures.append(planned(
            "progress", "Loss at the end under each weighting", f"Each term's mean loss on the {outcome['on']} batches "
            "after the same steps from the same start: trained alone, under the weights in force and under the "
            "recommended weights; each term's bars are scaled by its largest value and labelled in its own units, "
            "the dashed tick is its start.", lambda: end_loss_info(terms, *outcome_runs(summary, terms))))
    curve = diagnosis.alpha_curve
    if curve is not None:
        figures.append(planned(
            "alpha", "Alpha curve", "The share of the first term that each alpha would give, predicted from the "
            "recorded gradient norms without retraining. The dot marks the suggested alpha, the square the current "
            "one.", lambda: alpha_info(curve.alphas, curve.first_share, curve.suggested_alpha, curve.current_alpha,
                                       terms, diagnosis.dominance.threshold, getattr(curve, "first_share_low", None),
                                       getattr(curve, "first_share_high", None))))
    else:
        current = [diagnosis.current_weights.get(t, 1.0) for t in terms]
        recommended = [(summary.get("recommended_weights") or diagnosis.current_weights).get(t, 1.0) for t in terms]
        if current != recommended:
            figures.append(planned(
                "weights", "Recommended weights", "The weights in force beside the recommended ones (their sum "
                "kept); the axis is logarithmic when they span decades.",
                (lambda: weights_info(terms, current, recommended)) if len(terms) >= 2 else None,
                "one term: there is no balance to recommend"))
    run = diagnosis.run
    has_grads = bool(len(run.grad_steps)) and sum(t in run.shared_terms for t in terms) >= 2
    layers = summary.get("layers") or {}
    figures.append(planned(
        "layers", "Per-layer map", "For each shared module, each term's share of its weighted gradient: where in the "
        "network one term takes over.",
        (lambda: layers_info(layers, terms, WRITTEN_CELLS)) if has_grads and layers else None,
        "no per-module gradient recorded"))
    return figures


def figure_plan(diagnosis: Diagnosis, summary: dict) -> list[PlannedFigure]:
    """Every figure of the report in page order, each with its info object or the reason it is not drawn."""
    return _run_figures(diagnosis) + _advice_figures(diagnosis, summary)


def report_figures(diagnosis: Diagnosis, summary: dict) -> list[ReportFigure]:
    """Every figure of the report, in page order, drawn as PNGs within the page's byte budget."""
    figures, draws = [], {}
    for entry in figure_plan(diagnosis, summary):
        if entry.info is None:
            figures.append(ReportFigure(entry.name, entry.title, entry.caption, note=entry.note))
            continue
        draws[entry.name] = functools.partial(DRAW[entry.name], entry.info)
        figures.append(drawn_figure(entry.name, entry.title, entry.caption, draws[entry.name]))
    return within_budget(figures, draws)
