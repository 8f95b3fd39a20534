"""lossdiag.Monitor on real training loops: bitwise neutral, numbers equal to brute force per scope, hooks owned."""
from __future__ import annotations

import gc
import json
import weakref

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from lossdiag import Monitor, SpecError
from lossdiag.record.schedule import Schedule
from lossdiag.record.stream import read_records
from reference import flat_term_gradients, gram, relative_error

WEIGHTS = {"aux": 0.5, "reg": 0.01, "mag": 2.0}
SCOPES = [("all", None), ("last-layer", None), ("representation", "high")]


class ThreeTerms(nn.Module):
    """An intermediate output after `low` and two outputs after `high`, with dropout in both blocks."""

    def __init__(self) -> None:
        super().__init__()
        self.low = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Dropout(0.2))
        self.high = nn.Sequential(nn.Linear(16, 16), nn.Tanh(), nn.Dropout(0.2))
        self.aux = nn.Linear(16, 3)
        self.head_a = nn.Linear(16, 1)
        self.head_b = nn.Linear(16, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        low = self.low(x)
        high = self.high(low)
        return self.aux(low), self.head_a(high).squeeze(-1), self.head_b(high).squeeze(-1)


def batch(step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(step)
    return torch.randn(8, 6, generator=g), torch.randint(0, 3, (8,), generator=g), torch.randn(8, generator=g)


def losses(model: ThreeTerms, data) -> dict[str, torch.Tensor]:
    x, labels, target = data
    logits, value, magnitude = model(x)
    return {"aux": F.cross_entropy(logits, labels), "reg": F.mse_loss(value, 10.0 * target),
            "mag": magnitude.pow(2).mean()}


def weighted_sum(terms: dict[str, torch.Tensor]) -> torch.Tensor:
    """What the loop would write by hand: w_aux * aux + w_reg * reg + w_mag * mag."""
    return WEIGHTS["aux"] * terms["aux"] + WEIGHTS["reg"] * terms["reg"] + WEIGHTS["mag"] * terms["mag"]


def fresh() -> tuple[ThreeTerms, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = ThreeTerms()
    return model, torch.optim.Adam(model.parameters(), lr=1e-2)


def train(steps: int, monitor: Monitor | None = None, method: str = "combine", model=None, optimizer=None):
    """The loop, with or without a monitor; returns the model and the gradients left by the last step."""
    if model is None:
        model, optimizer = fresh()
    for step in range(steps):
        terms = losses(model, batch(step))
        if monitor is not None and method == "combine":
            loss = monitor.combine(terms, weights=WEIGHTS)
        else:
            if monitor is not None:
                monitor.record(terms, weights=WEIGHTS)
            loss = weighted_sum(terms)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model, [None if p.grad is None else p.grad.clone() for p in model.parameters()]


@pytest.fixture
def deterministic():
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(previous)


@pytest.mark.parametrize("scope,at", SCOPES)
@pytest.mark.parametrize("every", [1, 7])
@pytest.mark.parametrize("method", ["combine", "record"])
def test_attaching_a_monitor_changes_nothing_bitwise(tmp_path, deterministic, scope, at, every, method):
    plain_model, plain_grads = train(12)
    plain_rng = torch.get_rng_state()
    model, optimizer = fresh()
    monitor = Monitor(model, out=tmp_path, every=every, scope=scope, at=at)
    _, grads = train(12, monitor, method, model, optimizer)
    rng = torch.get_rng_state()
    monitor.close()
    assert torch.equal(rng, plain_rng)
    for (name, p), q in zip(model.named_parameters(), plain_model.parameters()):
        assert torch.equal(p, q), name
    for g, h in zip(grads, plain_grads):
        assert torch.equal(g, h)
    assert len(read_records(tmp_path / "records.jsonl")[0]) == 12 + 2


@pytest.mark.parametrize("scope,at", SCOPES)
def test_never_writes_grad_and_keeps_no_graph_or_hook(tmp_path, scope, at):
    model, optimizer = fresh()
    monitor = Monitor(model, out=tmp_path, every=1, scope=scope, at=at)
    seen = []
    probe = model.high.register_forward_hook(lambda module, inputs, output: seen.append(weakref.ref(output)))
    for step in range(3):
        optimizer.zero_grad(set_to_none=True)
        terms = losses(model, batch(step))
        kept = [weakref.ref(t) for t in terms.values()]
        loss = monitor.combine(terms, weights=WEIGHTS)
        assert all(p.grad is None for p in model.parameters())
        loss.backward()
        optimizer.step()
        del terms, loss
        gc.collect()
        assert all(ref() is None for ref in kept + seen)
    probe.remove()
    monitor.close()
    for module in model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks and not module._backward_hooks


def test_representation_hook_is_only_there_before_recorded_steps(tmp_path):
    model, optimizer = fresh()
    monitor = Monitor(model, out=tmp_path, every=10, early=False, scope="representation", at=model.high)
    armed = []
    for step in range(12):
        armed.append(len(model.high._forward_hooks))
        loss = monitor.combine(losses(model, batch(step)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    monitor.close()
    assert armed == [1] + [0] * 9 + [1, 0]
    assert not model.high._forward_hooks


def _reference(scope: str, terms: dict[str, torch.Tensor], model: ThreeTerms, high: torch.Tensor) -> torch.Tensor:
    """The K x K Gram matrix by brute force: plain autograd.grad per term, flattened, in float64."""
    if scope == "representation":
        flat = {}
        for name, value in terms.items():
            (g,) = torch.autograd.grad(value, high, retain_graph=True, allow_unused=True)
            flat[name] = torch.zeros(high.numel(), dtype=torch.float64) if g is None else g.reshape(-1).double()
        return gram(flat)
    params = list(model.parameters())
    reached = {name: {i for i, g in enumerate(torch.autograd.grad(value, params, retain_graph=True,
                                                                  allow_unused=True)) if g is not None}
               for name, value in terms.items()}
    shared = [p for i, p in enumerate(params) if sum(i in r for r in reached.values()) >= 2]
    if scope == "last-layer":
        shared = list(model.high[0].parameters())
    return gram(flat_term_gradients(terms, shared))


@pytest.mark.parametrize("weights", [WEIGHTS, {"aux": 1.0, "reg": 0.0, "mag": 3.0}])
@pytest.mark.parametrize("scope,at", SCOPES)
def test_recorded_numbers_equal_brute_force(tmp_path, scope, at, weights):
    model, optimizer = fresh()
    monitor = Monitor(model, out=tmp_path, every=1, scope=scope, at=at)
    outputs = []
    probe = model.high.register_forward_hook(lambda module, inputs, output: outputs.append(output))
    expected = []
    for step in range(5):
        outputs.clear()
        terms = losses(model, batch(step))
        expected.append(_reference(scope, terms, model, outputs[0]))
        loss = monitor.combine(terms, weights=weights)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    probe.remove()
    monitor.close()
    records = read_records(tmp_path / "records.jsonl")[0]
    header, steps = records[0], [r for r in records if r["kind"] == "step"]
    assert header["source"] == "monitor" and header["scope"] == scope
    modules = {"all": ["low.0", "high.0"], "last-layer": ["high.0"], "representation": ["high"]}[scope]
    assert header["shared_modules"] == modules
    for record, reference in zip(steps, expected):
        actual = torch.tensor(record["grad"]["gram"], dtype=torch.float64)
        norms = reference.diagonal().sqrt()
        scale = torch.outer(norms, norms).clamp_min(1e-30)
        assert relative_error(actual, reference, scale) < 1e-6
        recorded_norms = torch.tensor([record["grad"]["norms"][t] for t in header["terms"]], dtype=torch.float64)
        assert relative_error(recorded_norms, norms, norms.clamp_min(1e-30)) < 1e-6
        assert record["grad"]["weights"] == {t: float(weights[t]) for t in header["terms"]}


def test_proxies_are_labelled_and_can_differ_from_the_exact_scope(tmp_path):
    summaries = {}
    for scope, at in SCOPES:
        model, optimizer = fresh()
        with Monitor(model, out=tmp_path / scope, every=2, scope=scope, at=at) as monitor:
            train(8, monitor, model=model, optimizer=optimizer)
        summaries[scope] = json.loads((tmp_path / scope / "summary.json").read_text())
    exact = summaries["all"]
    assert not exact["scope_proxy"] and exact["scope_note"] is None and "proxy" not in exact["verdict"]
    assert exact["per_term"]["aux"]["share"] > 0
    for scope in ("last-layer", "representation"):
        summary = summaries[scope]
        assert summary["scope"] == scope and summary["scope_proxy"]
        assert "high" in summary["scope_note"] and f"proxy: scope '{scope}'" in summary["verdict"]
        assert summary["per_term"]["aux"]["share"] == 0.0
        assert not [f for f in summary["findings"] if f["severity"] == "error"]
        assert (tmp_path / scope / "report.html").is_file()


@pytest.mark.parametrize("scope,at", SCOPES)
def test_freezing_layers_mid_run_does_not_break_the_loop(tmp_path, scope, at):
    model, optimizer = fresh()
    with Monitor(model, out=tmp_path, every=2, scope=scope, at=at) as monitor:
        train(4, monitor, model=model, optimizer=optimizer)
        model.low.requires_grad_(False)
        model.high.requires_grad_(False)
        train(4, monitor, model=model, optimizer=optimizer)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["steps"] == 8 and summary["recorded_steps"] >= 3


def test_summary_any_time_and_close_writes_outputs(tmp_path):
    model, optimizer = fresh()
    monitor = Monitor(model, out=tmp_path, every=3)
    with pytest.raises(SpecError, match="nothing recorded yet"):
        monitor.summary()
    train(5, monitor, model=model, optimizer=optimizer)
    middle = monitor.summary()
    assert middle["steps"] == 5 and middle["source"] == "monitor" and middle["ended_early"]
    assert middle["recorded_steps"] == len([s for s in range(5) if Schedule(3)(s)])
    train(4, monitor, model=model, optimizer=optimizer)
    final = monitor.close()
    assert final["steps"] == 9 and not final["ended_early"]
    assert json.loads((tmp_path / "summary.json").read_text()) == final
    assert (tmp_path / "report.html").is_file()
    assert monitor.close() == final
    with pytest.raises(SpecError, match="closed"):
        monitor.combine(losses(model, batch(0)))


def test_an_exception_in_the_loop_still_leaves_a_report(tmp_path):
    model, optimizer = fresh()
    with pytest.raises(KeyError):
        with Monitor(model, out=tmp_path, every=2) as monitor:
            train(3, monitor, model=model, optimizer=optimizer)
            raise KeyError("the loop failed")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["steps"] == 3 and summary["ended_early"]


def test_schedule_is_dense_early_then_every_n():
    assert [s for s in range(300) if Schedule(100)(s)] == [0, 1, 3, 10, 30, 100, 200]
    assert [s for s in range(4000) if Schedule(2000)(s)] == [0, 1, 3, 10, 30, 100, 300, 1000, 2000]
    assert [s for s in range(300) if Schedule(100, early=False)(s)] == [0, 100, 200]
    assert all(Schedule(1)(s) for s in range(20))
    with pytest.raises(SpecError, match="every"):
        Schedule(0)


@pytest.mark.parametrize("change,message", [
    (lambda t: {k: v for k, v in t.items() if k != "reg"}, "term 'reg' is missing"),
    (lambda t: {**t, "extra": t["aux"] * 2}, "term 'extra' is new"),
    (lambda t: {**t, "reg": t["reg"].expand(3)}, r"'reg' must be a scalar tensor, got shape \(3,\)"),
    (lambda t: {**t, "reg": 1.5}, "'reg' must be a floating-point scalar tensor, got float"),
    (lambda t: list(t.values()), "must be a non-empty mapping"),
])
def test_a_wrong_terms_mapping_is_a_clear_error(tmp_path, change, message):
    model, _ = fresh()
    monitor = Monitor(model, out=tmp_path)
    monitor.combine(losses(model, batch(0)))
    with pytest.raises(SpecError, match=message):
        monitor.combine(change(losses(model, batch(1))))
    monitor.close()


@pytest.mark.parametrize("weights,message", [
    ({"regression": 0.1}, "weights name unknown term 'regression'"),
    ({"reg": True}, "weight of 'reg' must be a number or a one-element tensor, got bool"),
    ({"reg": "0.5"}, "weight of 'reg' must be a number"),
    ({"reg": torch.ones(2)}, "weight of 'reg' must be a number or a one-element tensor, got Tensor"),
    ([0.5, 1.0, 1.0], "weights must be a mapping"),
])
def test_a_step_the_monitor_does_not_record_checks_its_weights_as_the_first_call(tmp_path, weights, message):
    model, _ = fresh()
    monitor = Monitor(model, out=tmp_path, every=100)
    monitor.combine(losses(model, batch(0)), weights={"reg": 0.5})
    monitor.combine(losses(model, batch(1)), weights={"reg": 0.5})
    with pytest.raises(SpecError, match=message):
        monitor.combine(losses(model, batch(2)), weights=weights)
    monitor.close()


def test_terms_and_weights_of_other_mapping_and_number_types_are_recorded_on_every_step(tmp_path):
    """Mappings that are not dicts, numpy numbers and one-element tensors as weights: accepted after the first call
    as on it, each step's values recorded under their names."""
    import types

    import numpy

    model, _ = fresh()
    calls = [(lambda t: t, {"reg": 0.5}), (types.MappingProxyType, {"reg": numpy.float32(0.5)}),
             (lambda t: dict(reversed(list(t.items()))), types.MappingProxyType({"reg": torch.tensor([0.5])})),
             (lambda t: t, None)]
    expected = []
    with Monitor(model, out=tmp_path, every=100) as monitor:
        for step, (wrap, weights) in enumerate(calls):
            terms = losses(model, batch(step))
            expected.append({name: float(value.detach()) for name, value in terms.items()})
            monitor.combine(wrap(terms), weights=weights)
    steps = [r for r in read_records(tmp_path / "records.jsonl")[0] if r["kind"] == "step"]
    assert [r["loss"] for r in steps] == expected


def test_reordered_terms_are_recorded_under_their_names(tmp_path):
    model, _ = fresh()
    with Monitor(model, out=tmp_path, every=1) as monitor:
        first = losses(model, batch(0))
        monitor.record(first)
        second = losses(model, batch(1))
        monitor.record(dict(reversed(list(second.items()))))
    steps = [r for r in read_records(tmp_path / "records.jsonl")[0] if r["kind"] == "step"]
    assert steps[1]["loss"] == {name: float(value.detach()) for name, value in second.items()}


@pytest.mark.parametrize("kwargs,message", [
    ({"scope": "everything"}, "scope must be one of"),
    ({"scope": "representation"}, "needs at="),
    ({"scope": "all", "at": "high"}, "only used with scope='representation'"),
    ({"scope": "representation", "at": "nowhere"}, "no submodule 'nowhere'"),
    ({"scope": "representation", "at": nn.Linear(2, 2)}, "not a submodule"),
    ({"every": 0}, "every must be"),
    ({"config": {"dominance_treshold": 0.5}}, "did you mean 'dominance_threshold'"),
])
def test_bad_options_are_clear_errors(tmp_path, kwargs, message):
    model, _ = fresh()
    with pytest.raises(SpecError, match=message):
        Monitor(model, out=tmp_path, **kwargs)


def test_usage_errors_in_the_loop(tmp_path):
    model, _ = fresh()
    monitor = Monitor(model, out=tmp_path / "weights")
    with pytest.raises(SpecError, match="weights name unknown term 'regression'"):
        monitor.combine(losses(model, batch(0)), weights={"regression": 0.1})
    after = Monitor(model, out=tmp_path / "after", every=1)
    terms = losses(model, batch(0))
    weighted_sum(terms).backward()
    with pytest.raises(SpecError, match="before loss.backward"):
        after.record(terms)
    shared = Monitor(model, out=tmp_path / "shared", scope="representation", at="low")
    with pytest.raises(SpecError, match="'reg' and 'mag' share"):
        shared.combine(losses(model, batch(0)))
    shared.close()
    assert not model.low._forward_hooks
