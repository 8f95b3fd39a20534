"""`lossdiag profile --jobs N`: the runs from the same start in worker processes give the very figures one process
gives, because every run uses run_threads torch threads wherever it runs (the parent here has two)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cli_helpers import ENV
from lossdiag.record.stream import read_records
from paths import EXAMPLES, FIXTURES
# The parent on two threads and the workers on run_threads (1): a run that took the parent's threads would differ.
TWO_THREADS = {**ENV, "OMP_NUM_THREADS": "2"}
FIGURES = ("outcome", "progress", "checks", "situations", "opposed", "recommendation", "recommended_weights",
           "verification", "verdict")


def profile(model: Path, out: Path, jobs: int, *options: str) -> tuple[dict, list[dict]]:
    completed = subprocess.run([sys.executable, "-m", "lossdiag", "profile", str(model), *options, "--jobs",
                                str(jobs), "--out", str(out)], env=TWO_THREADS, stdin=subprocess.DEVNULL,
                               capture_output=True, text=True, timeout=600)
    assert completed.returncode in (0, 1), completed.stderr
    return json.loads((out / "summary.json").read_text()), read_records(out / "records.jsonl")[0]


@pytest.mark.skipif(os.cpu_count() is None, reason="needs a core count")
@pytest.mark.parametrize("model, options", [
    (FIXTURES / "outcome_dense_units.py", ("--steps", "20", "--check-steps", "30")),
    (EXAMPLES / "two_outputs.py", ("--steps", "20", "--check-steps", "20")),
])
def test_two_jobs_give_the_figures_of_one_to_the_last_digit(tmp_path, model, options):
    serial, serial_records = profile(model, tmp_path / "one", 1, *options)
    parallel, parallel_records = profile(model, tmp_path / "two", 2, *options)
    assert serial["outcome"]["candidates"], "no candidate was verified: nothing ran in parallel to compare"
    for key in FIGURES:
        assert parallel[key] == serial[key], key
    runs = [[(r["kind"], r["step"], r["start_batches"], r["end_batches"]) for r in records if "end_batches" in r]
            for records in (serial_records, parallel_records)]
    assert runs[1] == runs[0]
    assert (serial["config"]["jobs"], parallel["config"]["jobs"]) == (1, 2)
    assert serial["config"]["run_threads"] == parallel["config"]["run_threads"] == 1
