"""Everything a finished (or killed) run leaves in its output folder, written from its diagnosis."""
from __future__ import annotations

from pathlib import Path

from lossdiag.diagnose import Diagnosis
from lossdiag.report.files import summary_json, write_atomic

SUMMARY = "summary.json"


def write_outputs(out: Path, diagnosis: Diagnosis, summary: dict) -> list[Path]:
    """Write summary.json into `out` and return the paths written."""
    out = Path(out)
    path = out / SUMMARY
    write_atomic(path, summary_json(summary))
    return [path]
