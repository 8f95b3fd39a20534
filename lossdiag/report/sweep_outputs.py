"""What a sweep leaves in its output folder besides its records: sweep.json, sweep.png and sweep.html."""
from __future__ import annotations

from pathlib import Path

from lossdiag.record.stream import finite_or_none
from lossdiag.report.files import summary_json, write_atomic
from lossdiag.sweep.records import SweepData

SWEEP_JSON, SWEEP_PNG, SWEEP_PAGE = "sweep.json", "sweep.png", "sweep.html"


def write_sweep_outputs(out: Path, data: SweepData) -> list[Path]:
    """Write sweep.json, sweep.png (removed when no point finished) and sweep.html, each atomically."""
    from lossdiag.report.sweep_figures import sweep_figures
    from lossdiag.report.sweep_html import sweep_page

    out = Path(out)
    sweep = finite_or_none(data.to_json())
    write_atomic(out / SWEEP_JSON, summary_json(sweep))
    figures = sweep_figures(data)
    png = out / SWEEP_PNG
    if figures[0].png is not None:
        write_atomic(png, figures[0].png)
    else:
        png.unlink(missing_ok=True)
    write_atomic(out / SWEEP_PAGE, sweep_page(sweep, data.meta["config"], figures))
    return [out / SWEEP_JSON, *([png] if figures[0].png is not None else []), out / SWEEP_PAGE]
