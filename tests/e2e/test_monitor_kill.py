"""A monitored run killed with SIGKILL keeps every step up to its last flush, and `lossdiag report` builds the page."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from cli_helpers import kill_when, model_file
from lossdiag.advise.diagnose import diagnose
from lossdiag.record.stream import read_records
from lossdiag.report.summary import build_summary

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


PAUSED = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import torch
    import torch.nn as nn
    import lossdiag

    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-2)
    monitor = lossdiag.Monitor(model, out=sys.argv[1], every=10)
    for step in range(301):
        out = model(torch.randn(16, 4))
        loss = monitor.combine({"a": out[:, 0].pow(2).mean(), "b": out[:, 1].abs().mean()})
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    Path(sys.argv[2]).touch()
    time.sleep(600)  # a long validation pass or checkpoint: the loop calls nothing of the monitor's
""")


def _kill_after(child: subprocess.Popen, marker: Path, seconds: float) -> None:
    """SIGKILL the child `seconds` after `marker` appears."""
    seen: list[float] = []

    def ready() -> bool:
        if not seen and marker.exists():
            seen.append(time.monotonic())
        return bool(seen) and time.monotonic() - seen[0] >= seconds

    kill_when(child, ready, 180, f"{marker.name} plus {seconds:g} s")


def test_a_monitor_killed_while_the_loop_pauses_keeps_every_step(tmp_path):
    run, marker, script = tmp_path / "run", tmp_path / "paused", tmp_path / "train.py"
    script.write_text(PAUSED)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, str(script), str(run), str(marker)], env=env, stderr=subprocess.PIPE)
    _kill_after(child, marker, 2.5)
    assert _flushed_steps(run / "records.jsonl") == 301


# In the profile's process call 1 counts the terms and 2..301 are the 300 steps; a worker process (--jobs) only
# ever runs the checks and candidates.
SLOW_CHECKS = ("import multiprocessing\n"
               "def before_call(call):\n    if call > 301 or multiprocessing.parent_process() is not None:\n"
               "        Path(__file__).with_name('checking').touch()\n        time.sleep(0.05)\n")


def test_a_profile_killed_during_the_checks_keeps_every_step_and_the_end(tmp_path):
    model = model_file(tmp_path, SLOW_CHECKS)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "-m", "lossdiag", "profile", str(model), "--steps", "300",
                              "--out", str(tmp_path / "out")], env=env, stderr=subprocess.PIPE)
    _kill_after(child, tmp_path / "checking", 2.5)
    kept = list((tmp_path / "out").glob("lossdiag-unfinished-*/records.jsonl"))
    assert len(kept) == 1 and not (tmp_path / "out" / "records.jsonl").exists()
    records, _ = read_records(kept[0])
    assert [r["step"] for r in records if r["kind"] == "step"] == list(range(300))
    assert records[-1]["kind"] == "end"
    rebuilt = build_summary(diagnose(records))
    assert "the profile ended before its runs from the same start" in rebuilt["recommendation_reason"]
    assert "Monitor" not in rebuilt["verdict"] and rebuilt["recommendation"] != "reweight"
