"""The report's figures, drawn with matplotlib's object API (never pyplot).

Each figure is built in two steps, as optuna's visualization module builds its plots: an `*_info` function picks
and shapes the plotted data into a small frozen object (info.py, outcome_info.py, sweep.py), and a `draw_*`
function only draws it (draw.py, draw_outcome.py, sweep.py) on the `ax` it is given or on a new Figure. The
convenience functions (loss_curves, share_area, ...) take plain arrays and do both. profile.py plans the report's
figures, png.py encodes them.
"""
from lossdiag.report.figures.draw import (check_curves, cosine_heatmap, draw_cosines, draw_layers, draw_series,
                                          draw_shares, grad_norms, loss_curves, share_area)
from lossdiag.report.figures.draw_outcome import (alpha_curve, draw_alpha, draw_end_losses, draw_weights,
                                                  end_loss_bars, weight_bars)
from lossdiag.report.figures.png import ReportFigure, drawn_figure, png_bytes
from lossdiag.report.figures.profile import FIGURE_NAMES, PlannedFigure, figure_plan, report_figures
from lossdiag.report.figures.theme import label, style

__all__ = ["FIGURE_NAMES", "PlannedFigure", "ReportFigure", "alpha_curve", "check_curves", "cosine_heatmap",
           "draw_alpha", "draw_cosines", "draw_end_losses", "draw_layers", "draw_series", "draw_shares",
           "draw_weights", "drawn_figure", "end_loss_bars", "figure_plan", "grad_norms", "label", "loss_curves",
           "png_bytes", "report_figures", "share_area", "style", "weight_bars"]
