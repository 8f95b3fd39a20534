"""What a sweep leaves in its output folder: sweep_records.jsonl, sweep.json, sweep.png and sweep.html, swapped in
through a staging folder like a profile's outputs (see report/outputs.py). Rendered from sweep.json's content and
the sweep's options, plain data the sweep hands over."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from lossdiag.record.stream import SWEEP_RECORDS
from lossdiag.report.files import summary_json, write_atomic
from lossdiag.report.outputs import Staging, publish_with

SWEEP_JSON, SWEEP_PNG, SWEEP_PAGE = "sweep.json", "sweep.png", "sweep.html"
SWEEP_NAMES = (SWEEP_RECORDS, SWEEP_JSON, SWEEP_PNG, SWEEP_PAGE)


def sweep_staging(out: str | Path, streamed: bool = False) -> Staging:
    """A staging folder inside `out` for a sweep's files; `streamed` when its records already sit in `out`."""
    return Staging(out, keep=(SWEEP_RECORDS,) if streamed else (), names=SWEEP_NAMES, records=SWEEP_RECORDS)


def render_sweep_outputs(folder: Path, sweep: dict, config: dict) -> None:
    """Write sweep.json (`sweep`, non-finite floats already null), sweep.png (when a point finished) and
    sweep.html into `folder`."""
    from lossdiag.report.figures.sweep import sweep_figures
    from lossdiag.report.sweep_html import sweep_page

    write_atomic(folder / SWEEP_JSON, summary_json(sweep))
    figures = sweep_figures(sweep)
    if figures[0].png is not None:
        write_atomic(folder / SWEEP_PNG, figures[0].png)
    write_atomic(folder / SWEEP_PAGE, sweep_page(sweep, config, figures))


def publish_sweep(staging: Staging, sweep: dict, config: dict, records: Optional[Sequence[dict]] = None) -> None:
    """Render a sweep into its staging folder and swap it in; an earlier sweep.png this one cannot draw goes."""
    publish_with(staging, lambda folder: render_sweep_outputs(folder, sweep, config), records)


def write_sweep_outputs(out: str | Path, sweep: dict, config: dict, records: Optional[Sequence[dict]] = None) -> None:
    """Write a sweep's files into `out` (its records too, when given; else those in `out` stay as they are)."""
    publish_sweep(sweep_staging(out, streamed=records is None), sweep, config, records)
