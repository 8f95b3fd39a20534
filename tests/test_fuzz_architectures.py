"""Property test: random small architectures with the structures users have (deep supervision, tied weights, a
layer applied twice, BatchNorm, dropout, frozen parameters, W + D[t] heads, dict outputs, a term on its own
parameters only). On each, every number a Monitor records and the profile's recorded step computes equals plain
torch.autograd.grad per term, and the Monitor leaves training bitwise as it was."""
from __future__ import annotations

import copy
import math
import random
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from lossdiag import Monitor
from lossdiag.record.gradients import recorded_step
from lossdiag.record.shared import module_of
from lossdiag.record.stream import read_records
from reference import flat_term_gradients, gram, relative_error

ARCHITECTURES = 60
STEPS = 2
INPUTS = 4
BATCH = 6
TOLERANCE = 1e-5


class RandomNet(nn.Module):
    """A trunk of 1-3 layers and 2-4 heads, each leaving the trunk at a random depth; the structure drawn from rng."""

    def __init__(self, rng: random.Random) -> None:
        super().__init__()
        width = rng.randint(3, 6)
        self.stem = nn.Linear(INPUTS, width)
        self.blocks = nn.ModuleList([nn.Linear(width, width) for _ in range(rng.randint(1, 3))])
        self.norm = nn.BatchNorm1d(width) if rng.random() < 0.35 else None
        self.dropout = nn.Dropout(0.3) if rng.random() < 0.35 else None
        self.twice = rng.random() < 0.3
        self.kinds = [rng.choice(["linear", "linear", "tied", "aliased"]) for _ in range(rng.randint(2, 4))]
        self.depths = [rng.randint(0, len(self.blocks)) for _ in self.kinds]
        self.heads = nn.ModuleList([nn.Linear(width, 3) for _ in self.kinds])
        self.base = nn.Parameter(torch.randn(width, 3) / width)
        self.deltas = nn.ParameterList([nn.Parameter(0.1 * torch.randn(width, 3)) for _ in self.kinds])
        if rng.random() < 0.3:
            rng.choice([self.stem, *self.blocks, *self.heads]).requires_grad_(False)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = torch.tanh(self.stem(x))
        if self.norm is not None:
            h = self.norm(h)
        levels = [h]
        for k, block in enumerate(self.blocks):
            h = torch.tanh(block(h))
            if k == 0 and self.twice:
                h = torch.tanh(block(h))
            if self.dropout is not None:
                h = self.dropout(h)
            levels.append(h)
        outputs = {}
        for k, (kind, depth) in enumerate(zip(self.kinds, self.depths)):
            feature = levels[depth]
            if kind == "tied":
                outputs[f"out{k}"] = feature @ self.stem.weight
            elif kind == "aliased":
                outputs[f"out{k}"] = feature @ (self.base + self.deltas[k])
            else:
                outputs[f"out{k}"] = self.heads[k](feature)
        return outputs


def draw_losses(rng: random.Random, model: RandomNet):
    """A losses(model, batch) function: one term per output (MSE, cross-entropy or L1 at a random scale), a term
    on two outputs of the dict, and sometimes a term on a head's own weight only."""
    kinds = [rng.choice(["mse", "ce", "l1"]) for _ in model.kinds]
    scales = [10 ** rng.uniform(-1, 1.5) for _ in model.kinds]
    pair = rng.random() < 0.4
    own = rng.randrange(len(model.kinds)) if rng.random() < 0.3 else None

    def losses(m: RandomNet, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        x, target, labels = batch
        outputs = m(x)
        terms = {}
        for k, (kind, scale) in enumerate(zip(kinds, scales)):
            out = outputs[f"out{k}"][:, :3]
            if kind == "mse":
                terms[f"t{k}"] = F.mse_loss(out, scale * target)
            elif kind == "ce":
                terms[f"t{k}"] = scale * F.cross_entropy(out, labels)
            else:
                terms[f"t{k}"] = (out - scale).abs().mean()
        if pair:
            terms["pair"] = (outputs["out0"][:, :3] - outputs["out1"][:, :3]).pow(2).mean()
        if own is not None:
            terms["own"] = 1e-2 * m.heads[own].weight.pow(2).sum()
        return terms

    return losses


def batches(seed: int) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(BATCH, INPUTS, generator=g), torch.randn(BATCH, 3, generator=g),
             torch.randint(0, 3, (BATCH,), generator=g)) for _ in range(STEPS)]


def reference(terms: dict[str, torch.Tensor], model: nn.Module) -> dict:
    """Every number a recorded step reports, by brute force: one autograd.grad per term over every trainable
    parameter, flattened in float64."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    reached = {}
    for name, value in terms.items():
        grads = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True) if value.requires_grad \
            else [None] * len(params)
        reached[name] = [i for i, g in enumerate(grads) if g is not None]
    shared = [i for i in range(len(params)) if sum(i in r for r in reached.values()) >= 2]
    g = gram(flat_term_gradients(terms, [params[i] for i in shared])) if shared else None
    names = list(terms)
    norms = {t: float(g[k, k].sqrt()) if g is not None else 0.0 for k, t in enumerate(names)}
    norms_all = {t: float(flat_term_gradients({t: terms[t]}, [params[i] for i in reached[t]])[t].norm())
                 if reached[t] else 0.0 for t in names}
    layers = {}
    for module in dict.fromkeys(module_of(named[i][0]) for i in shared):
        inside = [params[i] for i in shared if module_of(named[i][0]) == module]
        layers[module] = {t: float(v.norm()) for t, v in flat_term_gradients(terms, inside).items()}
    return {"gram": g, "norms": norms, "norms_all": norms_all, "layers": layers,
            "reaches_shared": {t: any(i in shared for i in reached[t]) for t in names}}


def close(actual: float, expected: float, scale: float) -> bool:
    return abs(actual - expected) <= TOLERANCE * max(abs(expected), scale, 1e-30)


def assert_matches(stats: dict, expected: dict, where: str) -> None:
    names = list(expected["norms"])
    biggest = max([*expected["norms"].values(), *expected["norms_all"].values(), 1e-30])
    if expected["gram"] is None:
        assert not any(stats["norms"].values()), where
    else:
        actual = torch.tensor(stats["gram"], dtype=torch.float64)
        norms = expected["gram"].diagonal().sqrt()
        assert relative_error(actual, expected["gram"], torch.outer(norms, norms).clamp_min(1e-30)) < TOLERANCE, where
    for t in names:
        assert close(stats["norms"][t], expected["norms"][t], 1e-6 * biggest), (where, t)
        assert close(stats["norms_all"][t], expected["norms_all"][t], 1e-6 * biggest), (where, t)
    assert set(stats["layers"]) == set(expected["layers"]), where
    for module, row in expected["layers"].items():
        for t in names:
            assert close(stats["layers"][module][t], row[t], 1e-6 * biggest), (where, module, t)


def train(seed: int, out: Path | None) -> dict:
    """Two training steps (SGD with momentum) of architecture `seed`, plain or with a Monitor; the final state,
    the reference numbers of each step and the records."""
    rng = random.Random(seed)
    torch.manual_seed(seed)
    model = RandomNet(rng)
    losses = draw_losses(rng, model)
    weights = {}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.5)
    monitor = Monitor(model, out=out, every=1) if out is not None else None
    expected, first_update = [], None
    torch.manual_seed(10_000 + seed)
    for step, batch in enumerate(batches(seed)):
        terms = losses(model, batch)
        weights = weights or {t: rng.choice([1.0, 10 ** rng.uniform(-2, 1)]) for t in terms}
        if monitor is None:
            expected.append(reference(terms, model))
            total = sum(weights[t] * v for t, v in terms.items())
        else:
            total = monitor.combine(terms, weights)
        optimizer.zero_grad()
        total.backward()
        if step == 0:
            first_update = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
        optimizer.step()
    state = {"params": [p.detach().clone() for p in model.parameters()],
             "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
             "buffers": [b.clone() for b in model.buffers()], "rng": torch.get_rng_state(),
             "momentum": [optimizer.state[p].get("momentum_buffer") for p in model.parameters()]}
    result = {"state": state, "expected": expected, "weights": weights, "first_update": first_update,
              "losses": losses}
    if monitor is not None:
        result["summary"] = monitor.summary()
        result["records"] = read_records(out / "records.jsonl")[0]
        monitor._writer.close()  # close() would also draw the report's figures, seconds per architecture
    return result


def assert_equal_tensors(a: list, b: list, what: str) -> None:
    assert len(a) == len(b), what
    for k, (x, y) in enumerate(zip(a, b)):
        assert (x is None) == (y is None), (what, k)
        assert x is None or torch.equal(x, y), (what, k)


def check_profile_step(seed: int, plain: dict) -> None:
    """The profile's recorded step on the first batch: its numbers, and the update it sets on .grad."""
    rng = random.Random(seed)
    torch.manual_seed(seed)
    model = RandomNet(rng)
    torch.manual_seed(10_000 + seed)
    terms = plain["losses"](model, batches(seed)[0])
    stats = recorded_step(model, terms, plain["weights"])
    assert_matches(stats, plain["expected"][0], f"architecture {seed}, profile")
    scale = max(float(g.abs().max()) for g in plain["first_update"] if g is not None)
    for k, (p, expected) in enumerate(zip(model.parameters(), plain["first_update"])):
        if expected is None:
            assert p.grad is None or not p.grad.any(), (seed, k)
        else:
            torch.testing.assert_close(p.grad, expected, rtol=TOLERANCE, atol=1e-6 * scale,
                                       msg=f"architecture {seed}, parameter {k}")


def check_monitor(seed: int, plain: dict, monitored: dict) -> None:
    for key in ("params", "grads", "buffers", "momentum"):
        assert_equal_tensors(monitored["state"][key], plain["state"][key], f"architecture {seed}, {key}")
    assert torch.equal(monitored["state"]["rng"], plain["state"]["rng"]), seed
    steps = [r for r in monitored["records"] if r["kind"] == "step"]
    assert len(steps) == STEPS
    for step, (record, expected) in enumerate(zip(steps, plain["expected"])):
        assert_matches(record["grad"], expected, f"architecture {seed}, step {step}")
    header = monitored["records"][0]
    balanced = [t for t in header["terms"] if header["term_shared_parameters"][t] > 0]
    medians = {t: sum(plain["weights"][t] * e["norms"][t] for e in plain["expected"]) / STEPS for t in balanced}
    total = sum(medians.values())
    for t in header["terms"]:
        share = monitored["summary"]["dominance"][t]
        expected = medians[t] / total if t in medians and total > 0 else 0.0
        assert share is None or math.isnan(expected) or close(share, expected, 1e-9), (seed, t)


@pytest.mark.parametrize("chunk", range(4))
def test_random_architectures_against_plain_autograd(tmp_path, chunk):
    for seed in range(chunk, ARCHITECTURES, 4):
        plain = train(seed, None)
        monitored = train(seed, tmp_path / str(seed))
        check_monitor(seed, plain, monitored)
        check_profile_step(seed, plain)


# Huge float32 norms (issue 16, item 3): one term scaled so that its gradient norm is 1e20-1e30, its square past
# float32's range; the numbers checked against plain autograd on a float64 twin of the model. -------------------

HUGE_ARCHITECTURES = 12


def huge_setup(seed: int) -> tuple[RandomNet, object, dict[str, float]]:
    """Architecture `seed`, its losses with one term multiplied up to a float32 gradient norm of 1e20-1e30, and
    weights (that term's divided by the same factor, so training stays on its ordinary scale)."""
    rng = random.Random(seed)
    torch.manual_seed(seed)
    model = RandomNet(rng)
    losses = draw_losses(rng, model)
    torch.manual_seed(20_000 + seed)
    unscaled = twin_reference(model, losses, batches(seed)[0])["norms_all"]
    term = rng.choice([t for t, norm in unscaled.items() if norm > 0])
    factor = 10 ** rng.uniform(20, 30) / unscaled[term]
    weights = {t: rng.choice([1.0, 10 ** rng.uniform(-2, 1)]) / (factor if t == term else 1.0) for t in unscaled}

    def scaled(m: RandomNet, batch: tuple) -> dict[str, torch.Tensor]:
        return {t: value * factor if t == term else value for t, value in losses(m, batch).items()}

    return model, scaled, weights


def twin_reference(model: nn.Module, losses, batch: tuple) -> dict:
    """reference() on a float64 copy of the model (the same parameters, buffers and, from the RNG state the caller
    set, dropout masks), fed the batch in float64."""
    twin = copy.deepcopy(model).double()
    x, target, labels = batch
    return reference(losses(twin, (x.double(), target.double(), labels)), twin)


def assert_matches_each(stats: dict, expected: dict, where: str) -> None:
    """Every number within TOLERANCE of its own term's scale (a term 1e25 times larger does not excuse the others)."""
    norms = expected["gram"].diagonal().sqrt()
    actual = torch.tensor(stats["gram"], dtype=torch.float64)
    assert relative_error(actual, expected["gram"], torch.outer(norms, norms).clamp_min(1e-30)) < TOLERANCE, where
    for t, full in expected["norms_all"].items():
        assert close(stats["norms_all"][t], full, 1e-30), (where, t)
        assert close(stats["norms"][t], expected["norms"][t], 1e-6 * full), (where, t)
        for module, row in expected["layers"].items():
            assert close(stats["layers"][module][t], row[t], 1e-6 * full), (where, module, t)


def train_huge(seed: int, out: Path | None) -> dict:
    """Two SGD steps of the scaled architecture, plain or with a Monitor; with it, the float64 reference of each
    step and the records."""
    model, losses, weights = huge_setup(seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.5)
    monitor = Monitor(model, out=out, every=1) if out is not None else None
    expected = []
    for step, batch in enumerate(batches(seed)):
        if monitor is not None:
            torch.manual_seed(30_000 + 7 * seed + step)
            expected.append(twin_reference(model, losses, batch))
        torch.manual_seed(30_000 + 7 * seed + step)
        terms = losses(model, batch)
        if monitor is None:
            total = sum(weights[t] * value for t, value in terms.items())
        else:
            total = monitor.combine(terms, weights)
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
    state = [p.detach().clone() for p in model.parameters()] + [b.clone() for b in model.buffers()]
    result = {"state": state, "expected": expected}
    if monitor is not None:
        result["records"] = read_records(out / "records.jsonl")[0]
        monitor._writer.close()
    return result


@pytest.mark.parametrize("seed", range(HUGE_ARCHITECTURES))
def test_huge_float32_norms_against_float64_autograd(tmp_path, seed):
    plain, monitored = train_huge(seed, None), train_huge(seed, tmp_path)
    assert_equal_tensors(monitored["state"], plain["state"], f"architecture {seed}, huge, state")
    steps = [r for r in monitored["records"] if r["kind"] == "step"]
    for step, (record, expected) in enumerate(zip(steps, monitored["expected"])):
        assert "nonfinite" not in record, (seed, step)
        assert max(expected["norms_all"].values()) > 1e19, (seed, step)
        assert_matches_each(record["grad"], expected, f"architecture {seed}, huge, step {step}")
    model, losses, weights = huge_setup(seed)
    torch.manual_seed(30_000 + 7 * seed)
    stats = recorded_step(model, losses(model, batches(seed)[0]), weights)
    assert_matches_each(stats, monitored["expected"][0], f"architecture {seed}, huge, profile")
    assert all(p.grad is None or bool(torch.isfinite(p.grad).all()) for p in model.parameters()), seed
