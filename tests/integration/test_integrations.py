"""Monitor `log=`: the contract's scalar names, equal to brute force, on recorded steps only; TensorBoard and W&B."""
from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
import torch.nn as nn

from lossdiag import Monitor, SpecError
from lossdiag.record.stream import read_records
from test_monitor import WEIGHTS, _reference, batch, deterministic, fresh, losses, train  # noqa: F401


class Calls:
    """A log function that keeps what it was given, and the steps already on disk when it was called."""

    def __init__(self, records_path) -> None:
        self.records_path = records_path
        self.calls: list[tuple[dict, int]] = []
        self.on_disk: list[set[int]] = []

    def __call__(self, scalars: dict, step: int) -> None:
        self.calls.append((scalars, step))
        records = read_records(self.records_path)[0]
        self.on_disk.append({r["step"] for r in records if r.get("kind") == "step"})


def test_log_gets_each_recorded_step_with_brute_force_numbers(tmp_path):
    model, optimizer = fresh()
    calls = Calls(tmp_path / "records.jsonl")
    monitor = Monitor(model, out=tmp_path, every=4, log=calls)
    expected = {}
    for step in range(9):
        terms = losses(model, batch(step))
        if monitor.schedule(step):
            expected[step] = (_reference("all", terms, model, None), {t: float(v.detach()) for t, v in terms.items()})
        loss = monitor.combine(terms, weights=WEIGHTS)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    monitor.close()
    recorded = [r["step"] for r in read_records(tmp_path / "records.jsonl")[0] if r.get("grad")]
    assert [step for _, step in calls.calls] == recorded == sorted(expected) == [0, 1, 3, 4, 8]
    assert all(step in disk for (_, step), disk in zip(calls.calls, calls.on_disk))
    names = list(WEIGHTS)
    for scalars, step in calls.calls:
        gram, values = expected[step]
        norms = gram.diagonal().sqrt()
        weighted = {t: WEIGHTS[t] * float(norms[k]) for k, t in enumerate(names)}
        pairs = [(0, 1), (0, 2), (1, 2)]
        assert set(scalars) == ({f"lossdiag/{t}/{q}" for t in names for q in ("loss", "grad_norm", "share")}
                                | {f"lossdiag/cosine/{names[a]}~{names[b]}" for a, b in pairs})
        for k, term in enumerate(names):
            assert scalars[f"lossdiag/{term}/loss"] == pytest.approx(values[term], rel=1e-6)
            assert scalars[f"lossdiag/{term}/grad_norm"] == pytest.approx(float(norms[k]), rel=1e-6)
            assert scalars[f"lossdiag/{term}/share"] == pytest.approx(weighted[term] / sum(weighted.values()),
                                                                       rel=1e-6)
        for a, b in pairs:
            cosine = float(gram[a, b] / (norms[a] * norms[b]))
            assert scalars[f"lossdiag/cosine/{names[a]}~{names[b]}"] == pytest.approx(cosine, rel=1e-6, abs=1e-9)


def test_log_waits_for_the_batched_transfer_and_summary_brings_it(tmp_path):
    model, optimizer = fresh()
    calls = Calls(tmp_path / "records.jsonl")
    monitor = Monitor(model, out=tmp_path, every=1, log=calls)
    train(3, monitor, model=model, optimizer=optimizer)
    assert len(calls.calls) <= 3 and all(step in disk for (_, step), disk in zip(calls.calls, calls.on_disk))
    monitor.summary()
    assert [step for _, step in calls.calls] == [0, 1, 2]
    monitor.close()
    assert len(calls.calls) == 3


class WithPrior(nn.Module):
    """Two heads on a shared layer, and a prior on a parameter no other term reaches."""

    def __init__(self) -> None:
        super().__init__()
        self.shared = nn.Linear(4, 8)
        self.head_a, self.head_b = nn.Linear(8, 1), nn.Linear(8, 1)
        self.scale = nn.Parameter(torch.ones(3))


def test_a_term_off_the_shared_parameters_has_share_zero_and_no_cosine(tmp_path):
    torch.manual_seed(0)
    model = WithPrior()
    calls = []
    with Monitor(model, out=tmp_path, every=1, log=lambda scalars, step: calls.append(scalars)) as monitor:
        for _ in range(2):
            h = torch.tanh(model.shared(torch.randn(16, 4)))
            monitor.combine({"a": model.head_a(h).pow(2).mean(), "b": (model.head_b(h) - 1).pow(2).mean(),
                             "prior": model.scale.pow(2).sum()}).backward()
    for scalars in calls:
        assert scalars["lossdiag/prior/share"] == 0.0 and scalars["lossdiag/prior/loss"] == pytest.approx(3.0)
        assert scalars["lossdiag/a/share"] + scalars["lossdiag/b/share"] == pytest.approx(1.0)
        assert [name for name in scalars if "cosine" in name] == ["lossdiag/cosine/a~b"]


def test_log_must_be_callable(tmp_path):
    model, _ = fresh()
    with pytest.raises(SpecError, match="log must be a function log\\(scalars, step\\), got str"):
        Monitor(model, out=tmp_path, log="tensorboard")


def test_tensorboard_event_file_holds_every_scalar_and_training_is_bitwise_unchanged(tmp_path, deterministic):
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter

    from lossdiag.integrations.tensorboard import to_tensorboard

    plain_model, plain_grads = train(12)
    plain_rng = torch.get_rng_state()
    model, optimizer = fresh()
    calls = []
    writer = SummaryWriter(log_dir=str(tmp_path / "tb"))
    publish = to_tensorboard(writer)
    monitor = Monitor(model, out=tmp_path / "run", every=5,
                      log=lambda scalars, step: (calls.append((scalars, step)), publish(scalars, step)))
    _, grads = train(12, monitor, model=model, optimizer=optimizer)
    rng = torch.get_rng_state()
    monitor.close()
    writer.close()
    assert torch.equal(rng, plain_rng)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), plain_model.parameters()))
    assert all(torch.equal(g, h) for g, h in zip(grads, plain_grads))
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {f"lossdiag/{t}/share" for t in WEIGHTS} <= set(tags)
    assert set(tags) == set(calls[0][0])
    for tag in tags:
        logged = [(step, scalars[tag]) for scalars, step in calls]
        read = [(e.step, e.value) for e in events.Scalars(tag)]
        assert [s for s, _ in read] == [s for s, _ in logged] == [0, 1, 3, 5, 10]
        assert [v for _, v in read] == pytest.approx([v for _, v in logged], rel=1e-6)


def test_wandb_offline_run_gets_the_scalars_on_their_own_step_axis(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb", reason="wandb is not installed")
    from lossdiag.integrations.wandb import to_wandb

    monkeypatch.setenv("WANDB_SILENT", "true")
    run = wandb.init(mode="offline", dir=str(tmp_path), project="lossdiag-test")
    try:
        model, optimizer = fresh()
        calls = []
        publish = to_wandb(run)
        with Monitor(model, out=tmp_path / "run", every=2,
                     log=lambda scalars, step: (calls.append((scalars, step)), publish(scalars, step))) as monitor:
            train(5, monitor, model=model, optimizer=optimizer)
        summary = dict(run.summary)
    finally:
        run.finish()
    last, step = calls[-1]
    assert [s for _, s in calls] == [0, 1, 2, 4] and summary["lossdiag/step"] == step == 4
    assert summary["_step"] == len(calls) - 1
    for name, value in last.items():
        assert math.isclose(summary[name], value, rel_tol=1e-9), name


def test_wandb_without_a_run_is_a_clear_error(monkeypatch):
    wandb = pytest.importorskip("wandb", reason="wandb is not installed")
    from lossdiag.integrations.wandb import to_wandb

    monkeypatch.setattr(wandb, "run", None)
    with pytest.raises(SpecError, match="no active W&B run"):
        to_wandb()


def test_the_core_imports_no_framework():
    code = ("import sys, lossdiag, lossdiag.integrations, lossdiag.integrations.tensorboard\n"
            "heavy = [m for m in ('lightning', 'transformers', 'tensorboard', 'wandb', 'torch.utils.tensorboard') "
            "if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
