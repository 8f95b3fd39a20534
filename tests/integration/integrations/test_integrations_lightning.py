"""LossDiagCallback in real Lightning fits: two lines in the module, a report, TensorBoard scalars, bitwise neutral."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

pl = pytest.importorskip("lightning.pytorch", reason="the lightning extra is not installed")
pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")

from lightning.pytorch.loggers import TensorBoardLogger  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from lossdiag.integrations.lightning import LossDiagCallback  # noqa: E402

WEIGHTS = {"classification": 1.0, "regression": 0.01}


class TwoHeads(pl.LightningModule):
    """A classifier and a large-scale regression on one trunk, with dropout; `plain` trains without lossdiag."""

    def __init__(self, plain: bool = False, fail_at: int = -1) -> None:
        super().__init__()
        self.plain = plain
        self.fail_at = fail_at
        self.trunk = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Dropout(0.1))
        self.classify = nn.Linear(16, 3)
        self.regress = nn.Linear(16, 1)

    def training_step(self, batch, batch_idx):
        if batch_idx == self.fail_at:
            raise RuntimeError("the step failed")
        x, labels, target = batch
        h = self.trunk(x)
        terms = {"classification": F.cross_entropy(self.classify(h), labels),
                 "regression": F.mse_loss(self.regress(h).squeeze(-1), 30.0 * target)}
        if self.plain:
            return WEIGHTS["classification"] * terms["classification"] + WEIGHTS["regression"] * terms["regression"]
        return self.lossdiag.combine(terms, WEIGHTS)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-2)


def loader() -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, 6, generator=g)
    return DataLoader(TensorDataset(x, (x[:, :3]).argmax(1), x.sum(1)), batch_size=8)


def fit(tmp_path, plain: bool = False, fail_at: int = -1, callbacks=(), **trainer_options):
    """One fit from seed 0 with a TensorBoard logger; returns the module."""
    pl.seed_everything(0, verbose=False)
    module = TwoHeads(plain, fail_at)
    options = {"accelerator": "cpu", "devices": 1, "max_steps": 10, "enable_checkpointing": False,
               "enable_progress_bar": False, "enable_model_summary": False, **trainer_options}
    trainer = pl.Trainer(logger=TensorBoardLogger(str(tmp_path), name="tb"), callbacks=list(callbacks), **options)
    trainer.fit(module, loader())
    return module


def shares_in_events(tmp_path) -> dict[str, list[int]]:
    (events_file,) = (tmp_path / "tb").rglob("events.out.tfevents.*")
    events = EventAccumulator(str(events_file.parent))
    events.Reload()
    return {tag: [e.step for e in events.Scalars(tag)] for tag in events.Tags()["scalars"] if tag.endswith("/share")}


@pytest.mark.parametrize("options", [{}, {"accumulate_grad_batches": 3}, {"precision": "bf16-mixed"}],
                         ids=["plain", "accumulate", "bf16"])
def test_fit_writes_the_report_and_tensorboard_shares_and_stays_bitwise_the_same(tmp_path, options):
    plain = fit(tmp_path / "plain", plain=True, **options)
    callback = LossDiagCallback(out=tmp_path / "run", every=4)
    module = fit(tmp_path / "lossdiag", callbacks=[callback], **options)
    for (name, p), q in zip(module.named_parameters(), plain.parameters()):
        assert torch.equal(p, q), name
    assert (tmp_path / "run" / "report.html").is_file()
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary == callback.summary and set(summary["per_term"]) == set(WEIGHTS)
    accumulate = options.get("accumulate_grad_batches", 1)
    assert summary["steps"] == 10 * accumulate
    recorded = [s for s in range(10 * accumulate) if module.lossdiag.schedule(s)]
    shares = shares_in_events(tmp_path / "lossdiag")
    assert set(shares) == {f"lossdiag/{t}/share" for t in WEIGHTS}
    for steps in shares.values():
        assert steps == [s // accumulate for s in recorded]


def test_an_exception_in_training_step_closes_the_monitor_and_keeps_the_records(tmp_path):
    callback = LossDiagCallback(out=tmp_path / "run", every=1)
    with pytest.raises(RuntimeError, match="the step failed"):
        fit(tmp_path / "lossdiag", fail_at=5, callbacks=[callback])
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["steps"] == 5 and summary["ended_early"]
    assert callback.monitor is None
    assert shares_in_events(tmp_path / "lossdiag")["lossdiag/regression/share"] == [0, 1, 2, 3, 4]


@pytest.mark.slow
def test_ddp_on_two_processes_writes_once_from_rank_0_and_stays_bitwise_the_same(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for mode in ("plain", "lossdiag"):
        completed = subprocess.run([sys.executable, __file__, str(tmp_path), mode], env=env, capture_output=True,
                                   text=True, timeout=300)
        assert completed.returncode == 0, completed.stderr[-3000:]
    for rank in (0, 1):
        plain = torch.load(tmp_path / "plain" / f"rank{rank}.pt")
        diagnosed = torch.load(tmp_path / "lossdiag" / f"rank{rank}.pt")
        assert plain.keys() == diagnosed.keys()
        assert all(torch.equal(plain[k], diagnosed[k]) for k in plain)
    assert (tmp_path / "lossdiag" / "rank1.summary").read_text() == "null"
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary == json.loads((tmp_path / "lossdiag" / "rank0.summary").read_text())
    assert summary["steps"] == 10 and not summary["ended_early"]
    lines = (tmp_path / "run" / "records.jsonl").read_text().splitlines()
    steps = [json.loads(line)["step"] for line in lines if '"kind":"step"' in line]
    assert steps == list(range(10)) and sum('"kind":"meta"' in line for line in lines) == 1
    assert set(shares_in_events(tmp_path / "lossdiag")) == {f"lossdiag/{t}/share" for t in WEIGHTS}


def _ddp_fit(folder: Path, mode: str) -> None:
    """One fit with strategy="ddp" on two CPU processes (Lightning starts the second by running this file again)."""
    callback = LossDiagCallback(out=folder / "run", every=3)
    module = fit(folder / mode, plain=mode == "plain", callbacks=[] if mode == "plain" else [callback],
                 strategy="ddp", devices=2)
    rank = int(os.environ.get("LOCAL_RANK", "0"))
    torch.save(module.state_dict(), folder / mode / f"rank{rank}.pt")
    (folder / mode / f"rank{rank}.summary").write_text(json.dumps(callback.summary))


if __name__ == "__main__":
    _ddp_fit(Path(sys.argv[1]), sys.argv[2])
