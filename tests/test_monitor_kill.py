"""A monitored run killed with SIGKILL keeps every step up to its last flush, and `lossdiag report` builds the page."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from cli_helpers import kill_when
from lossdiag.record.stream import read_records

TRAIN = textwrap.dedent("""
    import sys, time
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    import lossdiag

    torch.manual_seed(0)
    trunk, head_1, head_2 = nn.Linear(4, 8), nn.Linear(8, 2), nn.Linear(8, 1)
    model = nn.ModuleDict({"trunk": trunk, "head_1": head_1, "head_2": head_2})
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-2)
    monitor = lossdiag.Monitor(model, out=sys.argv[1], every=10)
    step = 0
    while True:
        x = torch.randn(16, 4)
        h = torch.tanh(trunk(x))
        terms = {"classify": F.cross_entropy(head_1(h), (x[:, 0] > 0).long()),
                 "regress": F.mse_loss(head_2(h).squeeze(-1), 50.0 * x[:, 1])}
        loss = monitor.combine(terms, weights={"regress": 0.1})
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        step += 1
        time.sleep(0.004)
""")

MIN_STEPS = 300


def _flushed_steps(path: Path) -> int:
    if not path.is_file():
        return 0
    return sum(1 for line in path.read_text().splitlines() if line.startswith('{"kind":"step"'))


def test_a_killed_run_keeps_its_flushed_steps_and_reports(tmp_path):
    run = tmp_path / "run"
    script = tmp_path / "train.py"
    script.write_text(TRAIN)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, str(script), str(run)], env=env, stderr=subprocess.PIPE)
    kill_when(child, lambda: _flushed_steps(run / "records.jsonl") >= MIN_STEPS, 120,
              "a few hundred flushed steps of the monitored run")
    records, _ = read_records(run / "records.jsonl")
    steps = [r["step"] for r in records if r["kind"] == "step"]
    assert steps == list(range(len(steps))) and len(steps) >= MIN_STEPS
    assert records[0]["kind"] == "meta" and not any(r["kind"] == "end" for r in records)
    report = subprocess.run([sys.executable, "-m", "lossdiag", "report", str(run)], env=env,
                            capture_output=True, text=True)
    assert report.returncode == 0, report.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == len(steps) and summary["ended_early"]
    assert summary["recorded_steps"] == sum(1 for r in records if r.get("grad"))
    assert f"{len(steps)} steps" in (run / "report.html").read_text()
