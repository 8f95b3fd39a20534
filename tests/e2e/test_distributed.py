"""The Monitor under DistributedDataParallel, in real processes (2 ranks, gloo, CPU): rank 0's records equal a
single-process run on the concatenated global batch, training stays bitwise the same on every rank, and a rank
killed mid-run leaves rank 0's records readable.

One launch runs every scenario (process start-up is the cost); each test then checks one of its results.
"""
from __future__ import annotations

import datetime
import json
import math
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import pytest
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

from lossdiag import Monitor, SpecError
from lossdiag.record.schedule import Schedule
from lossdiag.record.stream import read_records

WORLD = 2
PER_RANK = 8
STEPS = 6


class Net(nn.Module):
    """An intermediate output after `low`, a regression and a magnitude term after `high`; `spare` is never used."""

    def __init__(self, dropout: float = 0.0, spare: bool = False) -> None:
        super().__init__()
        self.low = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Dropout(dropout))
        self.high = nn.Sequential(nn.Linear(16, 16), nn.Tanh(), nn.Dropout(dropout))
        self.aux = nn.Linear(16, 3)
        self.head = nn.Linear(16, 1)
        self.spare = nn.Linear(16, 1) if spare else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        low = self.low(x)
        high = self.high(low)
        return self.aux(low), self.head(high).squeeze(-1), high


ROUTE = 1.5


class Routed(Net):
    """Net whose `high` layer is a mixture of two experts, each sample dispatched to one: the second takes the
    samples whose first input passes ROUTE, which none of steps 0 and 1 has; at step 2 one sample of rank 1's slice
    reaches it (rank 0's none), at step 3 one of each rank's."""

    def __init__(self) -> None:
        super().__init__()
        self.high = nn.ModuleList([nn.Sequential(nn.Linear(16, 16), nn.Tanh()) for _ in range(2)])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        low = self.low(x)
        chosen = (x[:, 0] > ROUTE).long()
        high = low.new_zeros(low.shape)
        for k, expert in enumerate(self.high):
            rows = (chosen == k).nonzero().flatten()
            if len(rows):
                high = high.index_copy(0, rows, expert(low[rows]))
        return self.aux(low), self.head(high).squeeze(-1), high


def global_batch(step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 + step)
    size = WORLD * PER_RANK
    return torch.randn(size, 6, generator=g), torch.randint(0, 3, (size,), generator=g), torch.randn(size, generator=g)


def rank_batch(step: int, rank: Optional[int]) -> tuple[torch.Tensor, ...]:
    """Rank r's slice of the global batch; None: the whole global batch (the single-process reference)."""
    data = global_batch(step)
    return data if rank is None else tuple(t[rank * PER_RANK:(rank + 1) * PER_RANK] for t in data)


def terms_of(model: nn.Module, data: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
    x, labels, target = data
    logits, value, high = model(x)
    return {"aux": F.cross_entropy(logits, labels), "reg": F.mse_loss(value, 10.0 * target),
            "mag": high.pow(2).mean()}


WEIGHTS = {"aux": 1.0, "reg": 0.05, "mag": 2.0}


def fresh(dropout: float = 0.0, spare: bool = False, routed: bool = False) -> Net:
    torch.manual_seed(0)
    return Routed() if routed else Net(dropout, spare)


def train(model: nn.Module, forward: nn.Module, monitor: Optional[Monitor], rank: Optional[int], steps: int,
          optimizer: torch.optim.Optimizer, micro: int = 1, no_sync: Optional[Callable] = None) -> None:
    """The loop: `micro` micro-batches a step (gradients accumulated, the first ones under no_sync)."""
    for step in range(steps):
        optimizer.zero_grad()
        for m in range(micro):
            terms = terms_of(forward, rank_batch(step * micro + m, rank))
            loss = (monitor.combine(terms, weights=WEIGHTS) if monitor is not None
                    else sum(WEIGHTS[k] * v for k, v in terms.items()))
            if no_sync is not None and m < micro - 1:
                with no_sync():
                    loss.backward()
            else:
                loss.backward()
        optimizer.step()


# The scenarios compared with a single-process reference: how the monitor and DDP are put together.
EXACT = {
    "before": dict(every=1, options={}, wrap_after=True, find_unused=False, micro=1),
    "after-unused": dict(every=2, options={}, wrap_after=False, find_unused=True, micro=1),
    "no-sync": dict(every=1, options={}, wrap_after=True, find_unused=False, micro=2),
    "representation": dict(every=1, options={"scope": "representation", "at": "high"}, wrap_after=True,
                           find_unused=False, micro=1),
    "fsdp-representation": dict(every=2, options={"scope": "representation", "at": "high"}, fsdp=True,
                                find_unused=False, micro=1),
    "new-expert": dict(every=1, options={}, wrap_after=True, find_unused=True, micro=1, routed=True),
}
NEUTRAL_EVERY = (1, 7)
NEUTRAL_STEPS = 12


def run_exact(rank: int, folder: Path, name: str) -> None:
    setup = EXACT[name]
    model = fresh(spare=setup["find_unused"], routed=setup.get("routed", False))
    out = folder / f"{name}-rank{rank}"
    if setup.get("fsdp"):
        from torch.distributed.fsdp import fully_shard

        for module in (model.low, model.high, model):
            fully_shard(module)
        monitor, wrapped = Monitor(model, out=out, every=setup["every"], **setup["options"]), model
    elif setup["wrap_after"]:
        monitor = Monitor(model, out=out, every=setup["every"], **setup["options"])
        wrapped = DDP(model, find_unused_parameters=setup["find_unused"])
    else:
        wrapped = DDP(model, find_unused_parameters=setup["find_unused"])
        monitor = Monitor(wrapped, out=out, every=setup["every"], **setup["options"])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    train(model, wrapped, monitor, rank, STEPS, optimizer, setup["micro"], getattr(wrapped, "no_sync", None))
    summary = monitor.close()
    (folder / f"{name}-close{rank}.json").write_text(json.dumps(summary is not None))


def run_neutral(rank: int, folder: Path, every: Optional[int]) -> None:
    """Adam, dropout, 12 steps: parameters, gradients and the RNG state, saved for the parent to compare."""
    model = fresh(dropout=0.2)
    torch.manual_seed(rank)
    wrapped = DDP(model)
    monitor = None if every is None else Monitor(model, out=folder / f"neutral-{every}-rank{rank}", every=every)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    calls: list[int] = []
    original = dist.all_reduce
    dist.all_reduce = lambda tensor, *args, **kwargs: (calls.append(1), original(tensor, *args, **kwargs))[1]
    try:
        train(model, wrapped, monitor, rank, NEUTRAL_STEPS, optimizer)
        if monitor is not None:
            monitor.close()
    finally:
        dist.all_reduce = original
    torch.save({"parameters": [p.detach().clone() for p in model.parameters()],
                "grads": [p.grad.clone() for p in model.parameters()], "rng": torch.get_rng_state(),
                "collectives": len(calls)}, folder / f"neutral-{every}-{rank}.pt")


def worker(rank: int, folder: str, job: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{folder}/store-{job}", rank=rank, world_size=WORLD,
                            timeout=datetime.timedelta(seconds=60))
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        JOBS[job](rank, Path(folder))
    finally:
        dist.destroy_process_group()
    # End without interpreter teardown, as notebooks_examples/ddp_loop.py's leave() does and for its reason: gloo's
    # threads, kept alive by DDP past destroy_process_group, can abort a finalizing rank (exit -6).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def all_scenarios(rank: int, folder: Path) -> None:
    for name in EXACT:
        run_exact(rank, folder, name)
    for every in (None, *NEUTRAL_EVERY):
        run_neutral(rank, folder, every)
    refusals(rank, folder)


def refusals(rank: int, folder: Path) -> None:
    """What cannot be measured is refused at the first call, naming what works: the parameter scopes under FSDP2,
    the representation scope behind DDP's output sink (find_unused_parameters=True)."""
    from torch.distributed.fsdp import fully_shard

    sharded = fresh()
    fully_shard(sharded.low)
    fully_shard(sharded)
    joined = fresh(spare=True)
    setups = {"fsdp": (sharded, sharded, {}),
              "sink": (joined, DDP(joined, find_unused_parameters=True), {"scope": "representation", "at": "high"})}
    messages = {}
    for name, (model, forward, options) in setups.items():
        monitor = Monitor(model, out=folder / f"{name}-rank{rank}", **options)
        try:
            monitor.combine(terms_of(forward, rank_batch(0, rank)))
            messages[name] = None
        except SpecError as exc:
            messages[name] = str(exc)
    (folder / f"refused-{rank}.json").write_text(json.dumps(messages))


def flushed(path: Path) -> int:
    """Recorded steps (with gradients) that rank 0 has flushed to its records so far."""
    return path.read_text().count('"grad"') if path.is_file() else 0


def killed_rank(rank: int, folder: Path) -> None:
    """Rank 1 dies by SIGKILL once rank 0 has flushed a few recorded steps; rank 0 fails at the next collective and
    is killed as torchrun would kill it, so neither closes its monitor."""
    model = fresh()
    wrapped = DDP(model)
    records = folder / "killed" / "records.jsonl"
    monitor = Monitor(model, out=records.parent, every=10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    deadline = time.monotonic() + 60
    step = 0
    try:
        while time.monotonic() < deadline:
            if rank == 1 and step % 10 == 5 and flushed(records) >= 3:
                os.kill(os.getpid(), signal.SIGKILL)
            optimizer.zero_grad()
            monitor.combine(terms_of(wrapped, rank_batch(step % 50, rank)), weights=WEIGHTS).backward()
            optimizer.step()
            step += 1
    except RuntimeError:
        os.kill(os.getpid(), signal.SIGKILL)


JOBS = {"all": all_scenarios, "killed": killed_rank}


def launch(folder: Path, job: str, timeout: float = 120) -> list[Optional[int]]:
    """Start WORLD processes running `job` and wait for them; their exit codes."""
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=worker, args=(rank, str(folder), job)) for rank in range(WORLD)]
    env = {"OMP_NUM_THREADS": "1"}
    previous = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        for process in processes:
            process.start()
    finally:
        for key, value in previous.items():
            os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)
    deadline = time.monotonic() + timeout
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
    for process in processes:
        if process.is_alive():
            process.kill()
            process.join()
    return [process.exitcode for process in processes]


@pytest.fixture(scope="module")
def launched(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ddp")
    codes = launch(folder, "all")
    assert codes == [0] * WORLD, f"the ranks exited with {codes}"
    return folder


def reference(name: str, folder: Path) -> tuple[list[dict], dict]:
    """The same loop in one process on the concatenated global batch: its step records and summary."""
    setup = EXACT[name]
    model = fresh(spare=setup["find_unused"], routed=setup.get("routed", False))
    monitor = Monitor(model, out=folder / f"{name}-reference", every=setup["every"], **setup["options"])
    train(model, model, monitor, None, STEPS, torch.optim.SGD(model.parameters(), lr=0.05), setup["micro"])
    summary = monitor.summary()
    records, _ = read_records(folder / f"{name}-reference" / "records.jsonl")
    return records, summary


def _close(actual: float, expected: float, scale: float) -> bool:
    return abs(actual - expected) <= 1e-5 * scale


def assert_same_step(got: dict, want: dict) -> None:
    for term, value in want["loss"].items():
        assert _close(got["loss"][term], value, abs(value)), (got["step"], term)
    assert ("grad" in got) == ("grad" in want), got["step"]
    if "grad" not in want:
        return
    grad, expected = got["grad"], want["grad"]
    for key in ("norms", "norms_all"):
        for term, value in expected[key].items():
            if value is None or (isinstance(value, float) and math.isnan(value)):
                assert grad[key][term] is None, (got["step"], key, term)
            else:
                assert _close(grad[key][term], value, abs(value)), (got["step"], key, term, grad[key][term], value)
    gram = expected["gram"]
    for i, row in enumerate(gram):
        for j, value in enumerate(row):
            scale = math.sqrt(abs(gram[i][i] * gram[j][j]))
            assert _close(grad["gram"][i][j], value, scale), (got["step"], i, j)
    assert grad["layers"].keys() == expected["layers"].keys()
    for module, norms in expected["layers"].items():
        for term, value in norms.items():
            assert _close(grad["layers"][module][term], value, abs(value)), (got["step"], module, term)


@pytest.mark.parametrize("name", list(EXACT))
def test_rank_zero_records_equal_the_global_batch_in_one_process(launched, tmp_path, name):
    records, _ = read_records(launched / f"{name}-rank0" / "records.jsonl")
    expected, summary = reference(name, tmp_path)
    meta, want_meta = records[0], expected[0]
    shared, want_shared = meta["shared_parameters"], want_meta["shared_parameters"]
    assert (shared["names"], shared["count"]) == (want_shared["names"], want_shared["count"])
    if "scope" not in EXACT[name]["options"]:
        assert shared["numel"] == want_shared["numel"]
    assert meta["term_parameters"] == want_meta["term_parameters"]
    assert [r for r in records if r["kind"] == "layout"] == [r for r in expected if r["kind"] == "layout"]
    steps = [r for r in records if r["kind"] == "step"]
    want = [r for r in expected if r["kind"] == "step"]
    assert [r["step"] for r in steps] == [r["step"] for r in want] == list(range(len(want)))
    assert sum("grad" in r for r in steps) >= 3
    for got, wanted in zip(steps, want):
        assert_same_step(got, wanted)
    written = json.loads((launched / f"{name}-rank0" / "summary.json").read_text())
    for term, share in summary["dominance"].items():
        assert _close(written["dominance"][term], share, 1.0), term
    assert written["shared_parameters"]["names"] == summary["shared_parameters"]["names"]


@pytest.mark.parametrize("name", list(EXACT))
def test_only_rank_zero_writes_and_gets_the_summary(launched, name):
    assert (launched / f"{name}-rank0" / "report.html").is_file()
    assert not (launched / f"{name}-rank1").exists()
    assert json.loads((launched / f"{name}-close0.json").read_text()) is True
    assert json.loads((launched / f"{name}-close1.json").read_text()) is False


def test_an_expert_first_reached_by_one_rank_after_the_first_step_is_measured(launched):
    """Step 2 routes a sample of rank 1's slice only to the second expert: its gradient there, averaged over the
    ranks, is in the step's numbers (the comparison above) and its parameters join the shared ones from then on."""
    records = read_records(launched / "new-expert-rank0" / "records.jsonl")[0]
    steps = [r for r in records if r["kind"] == "step"]
    assert "high.1.0" not in steps[1]["grad"]["layers"] and "high.1.0" in steps[2]["grad"]["layers"]
    (layout,) = [r for r in records if r["kind"] == "layout"]
    assert layout["step"] == 2 and "high.1.0.weight" in layout["shared_parameters"]["names"]
    summary = json.loads((launched / "new-expert-rank0" / "summary.json").read_text())
    assert summary["shared_modules"] == ["low.0", "high.0.0", "high.1.0"]


def test_names_are_the_unwrapped_models_when_the_monitor_gets_the_ddp_wrapper(launched):
    names = read_records(launched / "after-unused-rank0" / "records.jsonl")[0][0]["shared_parameters"]["names"]
    assert names == ["low.0.weight", "low.0.bias", "high.0.weight", "high.0.bias"]


@pytest.mark.parametrize("every", NEUTRAL_EVERY)
def test_training_is_bitwise_the_same_on_every_rank(launched, every):
    for rank in range(WORLD):
        plain = torch.load(launched / f"neutral-None-{rank}.pt")
        monitored = torch.load(launched / f"neutral-{every}-{rank}.pt")
        assert torch.equal(plain["rng"], monitored["rng"]), rank
        for key in ("parameters", "grads"):
            for p, q in zip(plain[key], monitored[key]):
                assert torch.equal(p, q), (rank, key)
    steps = [r for r in read_records(launched / f"neutral-{every}-rank0" / "records.jsonl")[0] if r["kind"] == "step"]
    assert len(steps) == NEUTRAL_STEPS and sum("grad" in r for r in steps) >= 3


@pytest.mark.parametrize("every", NEUTRAL_EVERY)
def test_collectives_only_on_recorded_steps(launched, every):
    """One to agree on the shared parameters at the first call, one a recorded step, one at close()."""
    recorded = sum(1 for step in range(NEUTRAL_STEPS) if Schedule(every)(step))
    assert recorded < NEUTRAL_STEPS or every == 1
    for rank in range(WORLD):
        assert torch.load(launched / f"neutral-{every}-{rank}.pt")["collectives"] == 1 + recorded + 1


def test_what_cannot_be_measured_is_refused_in_one_line_naming_what_works(launched):
    for rank in range(WORLD):
        messages = json.loads((launched / f"refused-{rank}.json").read_text())
        assert all(message is not None and "\n" not in message for message in messages.values())
        assert "FSDP2" in messages["fsdp"] and "scope='representation'" in messages["fsdp"]
        assert "find_unused_parameters=True" in messages["sink"] and "scope='all'" in messages["sink"]
        assert not (launched / f"fsdp-rank{rank}").exists() and not (launched / f"sink-rank{rank}").exists()


def test_import_lossdiag_leaves_the_distributed_module_alone():
    code = "import sys, lossdiag; assert 'lossdiag.record.distributed' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


def test_a_killed_rank_leaves_rank_zero_records_readable(tmp_path):
    codes = launch(tmp_path, "killed")
    assert codes == [-signal.SIGKILL] * WORLD, codes
    records, _ = read_records(tmp_path / "killed" / "records.jsonl")
    steps = [r["step"] for r in records if r["kind"] == "step"]
    assert records[0]["kind"] == "meta" and steps == list(range(len(steps))) and len(steps) >= 10
    assert sum(1 for r in records if "grad" in r) >= 3
    report = subprocess.run([sys.executable, "-m", "lossdiag", "report", str(tmp_path / "killed")],
                            capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert report.returncode == 0, report.stderr
    assert (tmp_path / "killed" / "report.html").is_file()
