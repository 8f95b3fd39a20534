"""Shares raw and as the optimizer applies them, against plain autograd and Adam's own state."""
import math

import numpy as np
import pytest
import torch

from lossdiag.train.probe import draw_probe
from lossdiag.advise.shares import term_shares
from lossdiag.train.spec import spec_from_objects


class Trunk(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.trunk = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.Tanh())
        self.a, self.b = torch.nn.Linear(16, 1), torch.nn.Linear(16, 1)

    def forward(self, x):
        h = self.trunk(x)
        return self.a(h).squeeze(-1), self.b(h).squeeze(-1)


def losses(model, batch):
    x, y = batch
    a, b = model(x)
    return {"a": torch.nn.functional.mse_loss(a, y), "b": torch.nn.functional.mse_loss(b, 30 * y)}


def _setup(optimizer_class):
    g = torch.Generator().manual_seed(0)
    data = [(x, x.sum(1)) for x in (torch.randn(16, 5, generator=g) for _ in range(6))]
    spec = spec_from_objects(Trunk, lambda: iter(data), losses)
    model = Trunk()
    optimizer = optimizer_class(model.parameters(), lr=1e-2)
    weights = {"a": 2.0, "b": 0.01}
    for batch in data:
        optimizer.zero_grad()
        terms = losses(model, batch)
        (weights["a"] * terms["a"] + weights["b"] * terms["b"]).backward()
        optimizer.step()
    return spec, model, optimizer, weights, draw_probe(spec, 3, seed=0)


def _reference(model, optimizer, probe, weights, adam):
    shared = list(model.trunk.parameters())
    raw_rows, applied_rows = [], []
    for batch in probe.batches:
        terms = losses(model, batch)
        raw, applied = {}, {}
        for name, value in terms.items():
            grads = torch.autograd.grad(value, shared, retain_graph=True)
            raw[name] = weights[name] * math.sqrt(sum(float(g.square().sum()) for g in grads))
            total = 0.0
            for p, g in zip(shared, grads):
                scale = 1.0
                if adam:
                    state = optimizer.state[p]
                    v_hat = state["exp_avg_sq"] / (1 - 0.999 ** float(state["step"]))
                    scale = v_hat.sqrt() + 1e-8
                total += float((1e-2 * g / scale).square().sum())
            applied[name] = weights[name] * math.sqrt(total)
        raw_rows.append(raw)
        applied_rows.append(applied)

    def shares(rows):
        medians = {t: float(np.median([r[t] for r in rows])) for t in rows[0]}
        return {t: v / sum(medians.values()) for t, v in medians.items()}
    return shares(raw_rows), shares(applied_rows)


@pytest.mark.parametrize("optimizer_class, adam", [(torch.optim.Adam, True), (torch.optim.SGD, False)])
def test_shares_match_plain_autograd_and_the_optimizer_state(optimizer_class, adam):
    spec, model, optimizer, weights, probe = _setup(optimizer_class)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    grads = [p.grad.clone() for p in model.parameters()]
    raw, applied = term_shares(spec, model, optimizer, probe, weights)
    expected_raw, expected_applied = _reference(model, optimizer, probe, weights, adam)
    assert raw == pytest.approx(expected_raw, rel=1e-6)
    assert applied == pytest.approx(expected_applied, rel=1e-6)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads))
    if adam:
        assert applied["a"] != pytest.approx(raw["a"], rel=1e-3)
    else:
        assert applied == pytest.approx(raw, rel=1e-9)
