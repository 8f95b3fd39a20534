"""notebooks_examples/ddp_loop.py under `torchrun --nproc_per_node 2` (gloo, CPU): rank 0 writes the report, its
shares equal one process training on the concatenated global batches, and the parameters on both ranks are bitwise
those of the same run without the monitor."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

import lossdiag
from paths import ROOT

WORLD = 2
EVERY = 7


def torchrun(example: Path, folder: Path, *options: str) -> None:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(WORLD),
               str(example), *options]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]


def load(path: Path):
    spec = importlib.util.spec_from_file_location("ddp_loop", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def reference_shares(example, folder: Path) -> dict:
    """The example's loop in one process, each step on the ranks' batches concatenated (the global batch)."""
    torch.manual_seed(0)
    model = example.Net()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    monitor = lossdiag.Monitor(model, out=folder / "reference", every=EVERY)
    data = example.dataset()
    for epoch in range(3):
        for shares in zip(*(example.loader(data, rank, WORLD, epoch) for rank in range(WORLD))):
            batch = [torch.cat(parts) for parts in zip(*shares)]
            loss = monitor.combine(example.terms(model, *batch),
                                   weights={"loss_1": example.ALPHA, "loss_2": 1 - example.ALPHA})
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return monitor.summary()["dominance"]


def test_torchrun_example_matches_the_global_batch_and_changes_no_parameter(examples, tmp_path):
    example = examples / "ddp_loop.py"
    torchrun(example, tmp_path, "--every", str(EVERY), "--out", "run", "--save", "monitored")
    torchrun(example, tmp_path, "--no-monitor", "--save", "plain")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["run"] + [f"{kind}.rank{r}.pt" for kind in ("monitored", "plain") for r in range(WORLD)])
    assert (tmp_path / "run" / "report.html").is_file()
    expected = reference_shares(load(example), tmp_path)
    for term, share in expected.items():
        assert abs(summary["dominance"][term] - share) <= 1e-5 * share, (term, summary["dominance"][term], share)
    for rank in range(WORLD):
        plain = torch.load(tmp_path / f"plain.rank{rank}.pt")
        monitored = torch.load(tmp_path / f"monitored.rank{rank}.pt")
        assert all(torch.equal(p, q) for p, q in zip(plain, monitored)), rank
