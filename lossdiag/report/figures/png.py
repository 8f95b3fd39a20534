"""Figures as PNG bytes for the page and the output folder: deterministic files, a resolution that keeps a large
figure small, a figure that fails to draw left out with its reason, and all of them within one byte budget."""
from __future__ import annotations

import dataclasses
import io
import math
from typing import Callable, Mapping, Optional

from matplotlib.figure import Figure

DPI = 110
MIN_DPI = 60
MAX_PIXELS = 800_000
FIGURES_BUDGET = 1_200_000


@dataclasses.dataclass(frozen=True)
class ReportFigure:
    """One figure of the report as a PNG, or the reason it was left out."""

    name: str
    title: str
    caption: str
    png: Optional[bytes] = None
    note: str = ""


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
