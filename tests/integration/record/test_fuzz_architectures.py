"""Property test: random small architectures with the structures users have (deep supervision, tied weights, a
layer applied twice, BatchNorm, dropout, frozen parameters, W + D[t] heads, dict outputs, a term on its own
parameters only). On each, every number a Monitor records and the profile's recorded step computes equals plain
torch.autograd.grad per term, and the Monitor leaves training bitwise as it was.

Three families change which parameters the terms reach after the first step: a head on its trunk feature's
.detach() for a warm-up step, a trunk layer frozen for the first step, and a mixture of experts whose second
expert no sample of the first batch reaches. On them, each step's shares, cosines and logger scalars, the summary's
medians and shared parameters, from a Monitor and from lossdiag.profile, equal plain autograd's on that step."""
from __future__ import annotations

import copy
import math
import random
from pathlib import Path
from typing import Optional

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import lossdiag
from lossdiag import Monitor
from lossdiag.record.gradients import recorded_step
from lossdiag.record.stream import read_records
from lossdiag.report.scalars import step_scalars
from reference import TOLERANCE, assert_matches, close, relative_error, shares_and_cosines, step_reference

ARCHITECTURES = 60
WARM_UP, LATE_UNFREEZE, NEW_EXPERT = "warm-up detach", "late unfreeze", "new expert"
FAMILIES = (WARM_UP, LATE_UNFREEZE, NEW_EXPERT)
PER_FAMILY = 8
STEPS = 2
INPUTS = 4
BATCH = 6


class RandomNet(nn.Module):
    """A trunk of 1-3 layers and 2-4 heads, each leaving the trunk at a random depth; the structure drawn from rng.

    With a family: one head reads its feature detached on step 0 (`warming`), one trunk layer is frozen until the
    loop unfreezes it at step 1 (`late`), or two experts follow the stem, the second taking the samples whose first
    input is positive (none in the first batch).
    """

    def __init__(self, rng: random.Random, family: Optional[str] = None) -> None:
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
        self.warming = rng.randrange(len(self.kinds)) if family == WARM_UP else None
        self.late = rng.randint(0, len(self.blocks)) if family == LATE_UNFREEZE else None
        if self.late is not None:
            self.trunk_layer(self.late).requires_grad_(False)
        self.experts = nn.ModuleList([nn.Linear(width, width) for _ in range(2)]) if family == NEW_EXPERT else None

    def forward(self, x: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        h = torch.tanh(self.stem(x))
        if self.experts is not None:
            h = self.route(h, (x[:, 0] > 0).long())
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
            feature = levels[depth].detach() if k == self.warming and step == 0 else levels[depth]
            if kind == "tied":
                outputs[f"out{k}"] = feature @ self.stem.weight
            elif kind == "aliased":
                outputs[f"out{k}"] = feature @ (self.base + self.deltas[k])
            else:
                outputs[f"out{k}"] = self.heads[k](feature)
        return outputs

    def trunk_layer(self, index: int) -> nn.Module:
        return [self.stem, *self.blocks][index]

    def route(self, h: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
        """Each sample through the expert chosen for it; an expert no sample chooses is not in the graph."""
        routed = torch.zeros_like(h)
        for k, expert in enumerate(self.experts):
            rows = (chosen == k).nonzero().flatten()
            if len(rows):
                routed = routed.index_copy(0, rows, torch.tanh(expert(h[rows])))
        return routed


def draw_losses(rng: random.Random, model: RandomNet):
    """A losses(model, batch) function: one term per output (MSE, cross-entropy or L1 at a random scale), a term
    on two outputs of the dict, and sometimes a term on a head's own weight only."""
    kinds = [rng.choice(["mse", "ce", "l1"]) for _ in model.kinds]
    scales = [10 ** rng.uniform(-1, 1.5) for _ in model.kinds]
    pair = rng.random() < 0.4
    own = rng.randrange(len(model.kinds)) if rng.random() < 0.3 else None

    def losses(m: RandomNet, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]) -> dict[str, torch.Tensor]:
        x, target, labels, step = batch
        if m.late is not None and step >= 1:
            m.trunk_layer(m.late).requires_grad_(True)
        outputs = m(x, step)
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


def batches(seed: int) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]]:
    """Inputs, targets, labels and the step number; the first batch's first input is negative throughout, so that
    a routed second expert is first reached at step 1."""
    g = torch.Generator().manual_seed(seed)
    drawn = [(torch.randn(BATCH, INPUTS, generator=g), torch.randn(BATCH, 3, generator=g),
              torch.randint(0, 3, (BATCH,), generator=g), step) for step in range(STEPS)]
    drawn[0][0][:, 0] = -drawn[0][0][:, 0].abs()
    return drawn


def family_of(seed: int) -> Optional[str]:
    """The architectures after the first ARCHITECTURES take the families in turn."""
    return None if seed < ARCHITECTURES else FAMILIES[(seed - ARCHITECTURES) % len(FAMILIES)]


def train(seed: int, out: Path | None, lr: float = 0.05) -> dict:
    """Two training steps (SGD with momentum) of architecture `seed`, plain or with a Monitor; the final state,
    the reference numbers of each step and the records."""
    rng = random.Random(seed)
    torch.manual_seed(seed)
    model = RandomNet(rng, family_of(seed))
    order = [name for name, _ in model.named_parameters()]
    losses = draw_losses(rng, model)
    weights = {}
    optimizer = make_optimizer(model.parameters(), lr)
    monitor = Monitor(model, out=out, every=1) if out is not None else None
    expected, first_update = [], None
    torch.manual_seed(10_000 + seed)
    for step, batch in enumerate(batches(seed)):
        terms = losses(model, batch)
        weights = weights or {t: rng.choice([1.0, 10 ** rng.uniform(-2, 1)]) for t in terms}
        if monitor is None:
            expected.append(step_reference(terms, model))
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
              "losses": losses, "order": order}
    if monitor is not None:
        result["summary"] = monitor.summary()
        result["records"] = read_records(out / "records.jsonl")[0]
        monitor._writer.close()  # close() would also draw the report's figures, seconds per architecture
    return result


def make_optimizer(parameters, lr: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(parameters, lr=lr, momentum=0.5)


def assert_equal_tensors(a: list, b: list, what: str) -> None:
    assert len(a) == len(b), what
    for k, (x, y) in enumerate(zip(a, b)):
        assert (x is None) == (y is None), (what, k)
        assert x is None or torch.equal(x, y), (what, k)


def check_profile_step(seed: int, plain: dict) -> None:
    """The profile's recorded step on the first batch: its numbers, and the update it sets on .grad."""
    rng = random.Random(seed)
    torch.manual_seed(seed)
    model = RandomNet(rng, family_of(seed))
    torch.manual_seed(10_000 + seed)
    terms = plain["losses"](model, batches(seed)[0])
    stats, _ = recorded_step(model, terms, plain["weights"])
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
    check_balance(seed, plain, monitored["records"], monitored["summary"])


def check_balance(seed: int, plain: dict, records: list[dict], summary: dict) -> None:
    """Each step's shares, cosines and logger scalars, the summary's shares (medians over the steps on which each
    term reached shared parameters) and its shared parameters (those shared on some step), against plain autograd."""
    header = records[0]
    shared_terms = [t for t in header["terms"] if header["term_shared_parameters"][t] > 0]
    steps = [r for r in records if r["kind"] == "step"]
    for step, (record, expected) in enumerate(zip(steps, plain["expected"])):
        scalars = step_scalars(record, shared_terms)
        shares, cosines = shares_and_cosines(expected, plain["weights"])
        for t, share in shares.items():
            actual = scalars[f"lossdiag/{t}/share"]
            assert (math.isnan(actual) and math.isnan(share)) or close(actual, share, 1e-9), (seed, step, t)
        assert {key for key in scalars if key.startswith("lossdiag/cosine/")} == \
            {f"lossdiag/cosine/{a}~{b}" for a, b in cosines}, (seed, step)
        for (a, b), cosine in cosines.items():
            actual = scalars[f"lossdiag/cosine/{a}~{b}"]
            assert (math.isnan(actual) and math.isnan(cosine)) or abs(actual - cosine) < 1e-6, (seed, step, a, b)
    medians = {}
    for t in header["terms"]:
        norms = [plain["weights"][t] * e["norms"][t] for e in plain["expected"] if e["reaches_shared"][t]]
        if norms:
            medians[t] = float(np.median(norms))
    total = sum(medians.values())
    for t in header["terms"]:
        share = summary["dominance"][t]
        expected = medians[t] / total if t in medians and total > 0 else 0.0
        assert share is None or math.isnan(expected) or close(share, expected, 1e-9), (seed, t)
    shared = {name for e in plain["expected"] for name in e["shared_names"]}
    assert summary["shared_parameters"]["names"] == [name for name in plain["order"] if name in shared], seed


def check_profile(seed: int) -> None:
    """lossdiag.profile over the same steps (every one recorded, no checks): its records and summary. At learning
    rate 0, so that the plain loop's states are the profile's bit for bit (its update is the sum of the terms'
    gradients, equal to total.backward()'s only to rounding); what the terms reach still changes at step 1."""
    plain = train(seed, None, lr=0.0)
    rng = random.Random(seed)
    torch.manual_seed(seed)
    model = RandomNet(rng, family_of(seed))
    result = lossdiag.profile(model, batches(seed), plain["losses"], weights=plain["weights"], steps=STEPS, every=1,
                              check_steps=0, seed=10_000 + seed, progress=False,
                              make_optimizer=lambda parameters: make_optimizer(parameters, 0.0))
    steps = [r for r in result.records if r["kind"] == "step"]
    for step, (record, expected) in enumerate(zip(steps, plain["expected"])):
        assert_matches(record["grad"], expected, f"architecture {seed}, profile step {step}")
    check_balance(seed, plain, result.records, result.summary)


@pytest.mark.parametrize("chunk", range(4))
def test_random_architectures_against_plain_autograd(tmp_path, chunk):
    for seed in range(chunk, ARCHITECTURES + PER_FAMILY * len(FAMILIES), 4):
        plain = train(seed, None)
        monitored = train(seed, tmp_path / str(seed))
        check_monitor(seed, plain, monitored)
        check_profile_step(seed, plain)
        if family_of(seed) is not None:
            check_profile(seed)


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
    """step_reference() on a float64 copy of the model (the same parameters, buffers and, from the RNG state the
    caller set, dropout masks), fed the batch in float64."""
    twin = copy.deepcopy(model).double()
    x, target, labels, step = batch
    return step_reference(losses(twin, (x.double(), target.double(), labels, step)), twin)


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
    stats, _ = recorded_step(model, losses(model, batches(seed)[0]), weights)
    assert_matches_each(stats, monitored["expected"][0], f"architecture {seed}, huge, profile")
    assert all(p.grad is None or bool(torch.isfinite(p.grad).all()) for p in model.parameters()), seed
