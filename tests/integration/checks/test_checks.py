"""Gradient sanity, single-term checks and starved terms, on the real fixture models tests/fixtures/check_*.py."""
from __future__ import annotations

import copy
import json
import math
import random
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import lossdiag
from lossdiag.api import run_check
from lossdiag.checks.single_term import Trend, assess
from lossdiag.config import Config, load, resolve
from lossdiag.advise.diagnose import diagnose
from lossdiag.errors import SpecError
from lossdiag.record.shared import discover
from lossdiag.record.stream import read_records
from lossdiag.train.spec import batch_stream, load_model_file
from paths import FIXTURES


EXPECTED = {
    "check_healthy.py": set(),
    "check_detached.py": {("no-grad-path", "classification")},
    "check_zero.py": {("zero-grad", "regression")},
    "check_unlearnable.py": {("not-decreasing", "classification")},
    "check_nan.py": {("non-finite", "regression")},
    "check_starved.py": {("dominant-term", "regression"), ("starved", "classification")},
    "check_aux_detached.py": {("no-shared-params", "aux")},
    "check_diverging.py": {("diverging", "regression")},
    "check_nan_gradient.py": {("non-finite", "margin")},
}


def codes(findings) -> set[tuple[str, str]]:
    return {(f.code, term) for f in findings for term in f.terms}


@pytest.fixture(scope="module")
def profiled():
    """Each fixture profiled once with the default settings (profile plus checks)."""
    cache: dict[str, lossdiag.ProfileResult] = {}

    def get(name: str) -> lossdiag.ProfileResult:
        if name not in cache:
            cache[name] = lossdiag.profile(str(FIXTURES / name), progress=False)
        return cache[name]

    return get


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_fixture_gives_exactly_its_findings(profiled, name):
    result = profiled(name)
    assert codes(result.findings) == EXPECTED[name]
    for finding in result.findings:
        assert finding.advice and finding.advice.strip()


def test_healthy_model_raises_no_warning_and_every_term_passes(profiled):
    summary = profiled("check_healthy.py").summary
    assert summary["status"] == "ok"
    assert [c["status"] for c in summary["checks"]] == ["pass"] * 3
    assert all(not c["starved"] for c in summary["checks"])


def test_each_term_alone_starts_where_the_profile_starts(profiled):
    result = profiled("check_healthy.py")
    first_step = next(r for r in result.records if r.get("kind") == "step")
    checks = [r for r in result.records if r.get("kind") == "check"]
    assert [c["term"] for c in checks] == result.summary["terms"]
    assert [c["step"] for c in checks] == list(range(len(checks)))
    for check in checks:
        assert len(check["losses"]) == Config().check_steps
        assert check["losses"][0] == first_step["loss"][check["term"]]


def test_terms_whose_gradient_cannot_train_them_are_skipped_with_the_reason(profiled):
    detached = {c["term"]: c for c in profiled("check_detached.py").summary["checks"]}
    assert detached["classification"]["status"] == "skipped"
    assert "no trainable parameter" in detached["classification"]["reason"]
    assert detached["regression"]["status"] == "pass"
    zero = {c["term"]: c for c in profiled("check_zero.py").summary["checks"]}
    assert zero["regression"]["status"] == "skipped" and "zero" in zero["regression"]["reason"]


def test_nan_names_the_first_step_and_term_and_the_profile_keeps_recording(profiled):
    result = profiled("check_nan.py")
    spec = load_model_file(FIXTURES / "check_nan.py")
    stream = batch_stream(spec)
    targets = [next(stream)[2] for _ in range(Config().steps)]
    bad_steps = [s for s, target in enumerate(targets) if not torch.isfinite(target).all()]
    finding = next(f for f in result.findings if f.code == "non-finite")
    assert finding.terms == ["regression"] and finding.value == bad_steps[0]
    assert f"step {bad_steps[0]}" in finding.message and "skipped" in finding.message
    steps = [r for r in result.records if r.get("kind") == "step"]
    assert len(steps) == Config().steps
    assert [r["step"] for r in steps if r.get("nonfinite")] == bad_steps
    assert all(math.isfinite(r["loss"]["classification"]) for r in steps)


def test_a_gradient_that_is_nan_on_unrecorded_steps_is_still_caught_and_skipped():
    result = lossdiag.profile(str(FIXTURES / "check_nan_gradient.py"), steps=20, every=2, check_steps=10,
                              progress=False)
    hidden = [r["step"] for r in result.records if r.get("kind") == "nonfinite-update"]
    assert hidden == list(range(1, 20, 2))
    finding, = [f for f in result.findings if f.code == "non-finite"]
    assert finding.terms == ["margin"] and "its gradient" in finding.message
    assert "20 of 20 steps had a non-finite update" in finding.message and "never trained" in finding.message
    margin = next(c for c in result.summary["checks"] if c["term"] == "margin")
    assert margin["status"] == "skipped" and margin["nonfinite_steps"] == 10


def _poisoned_run(spec, steps: int) -> list[dict]:
    """Records of a plain loop that applies every update, NaN included, as an in-loop monitor would see it."""
    torch.manual_seed(0)
    model = spec.build_model()
    optimizer = spec.make_optimizer(model.parameters())
    stream = batch_stream(spec)
    records: list[dict] = []
    for step in range(steps):
        terms = spec.losses(model, next(stream))
        if not records:
            records.append({"kind": "meta", "step": 0, "terms": list(terms), "weights": {t: 1.0 for t in terms},
                            "config": {}, **discover(model, terms).describe()})
        values = {t: float(v.detach()) for t, v in terms.items()}
        record = {"kind": "step", "step": step, "loss": values}
        bad = [t for t, v in values.items() if not math.isfinite(v)]
        if bad:
            record["nonfinite"] = bad
        records.append(record)
        optimizer.zero_grad()
        sum(terms.values()).backward()
        optimizer.step()
    return records


def test_terms_poisoned_through_shared_parameters_are_not_blamed():
    records = _poisoned_run(load_model_file(FIXTURES / "check_nan.py"), 12)
    first = next(r for r in records if r.get("nonfinite"))
    assert first["nonfinite"] == ["regression"]
    assert any("classification" in r.get("nonfinite", []) for r in records)
    findings = [f for f in diagnose(records).findings if f.code == "non-finite"]
    assert [f.terms for f in findings] == [["regression"]]
    assert f"step {first['step']}" in findings[0].message
    assert "'classification'" in findings[0].message and "not blamed" in findings[0].message


def test_starved_reports_the_losses_alone_and_combined_in_the_terms_units(profiled):
    summary = profiled("check_starved.py").summary
    row = next(c for c in summary["checks"] if c["term"] == "classification")
    config = Config()
    assert row["starved"] and row["situation"] == "starved"
    seen = summary["situations"]["classification"]
    assert seen["start"] - seen["combined"] <= config.starved_ratio * (seen["start"] - seen["alone"])
    finding = next(f for f in summary["findings"] if f["code"] == "starved")
    for value in (seen["start"], seen["alone"], seen["combined"]):
        assert f"{value:.4g}" in finding["message"]
    assert f"{config.starved_ratio:g}" in finding["message"]


def test_api_leaves_the_callers_model_and_rng_untouched():
    spec = load_model_file(FIXTURES / "check_healthy.py")
    model = spec.build_model()
    before = copy.deepcopy(model.state_dict())
    torch.manual_seed(1234)
    random.seed(1234)
    np.random.seed(1234)
    rng = (torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy())
    result = lossdiag.profile(model, spec.batches, spec.losses, make_optimizer=spec.make_optimizer,
                              steps=30, check_steps=30, progress=False)
    assert [c["status"] for c in result.summary["checks"]] == ["pass"] * 3
    after = model.state_dict()
    assert list(after) == list(before)
    assert all(torch.equal(after[k], before[k]) for k in before)
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(torch.get_rng_state(), rng[0])
    assert random.getstate() == rng[1]
    assert np.array_equal(np.random.get_state()[1], rng[2])


def test_thresholds_come_from_yaml_and_are_printed_with_the_finding(tmp_path, profiled):
    drops = {c["term"]: c["relative_drop"] for c in profiled("check_healthy.py").summary["checks"]}
    strict = sorted(drops.values())[1]
    config_file = tmp_path / "lossdiag.yaml"
    config_file.write_text(f"check_min_drop: {strict}\nsteps: 40\n")
    result = lossdiag.profile(str(FIXTURES / "check_healthy.py"), config=config_file, progress=False)
    slow = {c["term"] for c in result.summary["checks"] if c["status"] == "pass" and "slow" in (c["reason"] or "")}
    assert slow == {t for t, d in drops.items() if d < strict}
    config_file.write_text("check_min_drop: 0.1\nsteps: 40\n")
    result = lossdiag.profile(str(FIXTURES / "check_unlearnable.py"), config=config_file, progress=False)
    finding = next(f for f in result.findings if f.code == "not-decreasing")
    assert "10%" in finding.message and finding.threshold == 0.1


@pytest.mark.parametrize("key, value", [("starved_ratio", 1.5), ("check_min_drop", 0.0), ("check_noise_z", 0),
                                        ("check_max_rise", -1.0), ("sanity_steps", 0), ("probe_batches", 0)])
def test_out_of_range_thresholds_are_usage_errors_naming_the_key(key, value):
    with pytest.raises(SpecError, match=key):
        resolve({key: value})


def test_every_check_threshold_has_a_default_and_overlays_from_yaml(tmp_path):
    names = ["sanity_steps", "check_min_drop", "check_noise_z",
             "check_max_rise", "starved_ratio"]
    defaults = Config()
    path = tmp_path / "c.yaml"
    path.write_text("".join(f"{n}: {getattr(defaults, n) / 2 if n != 'sanity_steps' else 3}\n" for n in names))
    loaded = load(path, None, {})
    for name in names:
        expected = 3 if name == "sanity_steps" else getattr(defaults, name) / 2
        assert getattr(loaded, name) == expected


def test_records_file_alone_rebuilds_the_same_checks_and_findings(tmp_path, profiled):
    result = lossdiag.profile(str(FIXTURES / "check_nan.py"), out=str(tmp_path), progress=False)
    records, torn = read_records(tmp_path / "records.jsonl")
    rebuilt = diagnose(records, torn)
    assert codes(rebuilt.findings) == codes(result.findings) == EXPECTED["check_nan.py"]
    assert [(c["term"], c["status"], c["relative_drop"]) for c in rebuilt.checks] == \
        [(c["term"], c["status"], c["relative_drop"]) for c in result.summary["checks"]]
    assert [p.starved for p in rebuilt.progress] == [p.starved for p in result.diagnosis.progress]


def test_check_run_reports_only_sanity_and_single_term_findings():
    spec = load_model_file(FIXTURES / "check_starved.py")
    result = run_check(spec, Config(), progress=False)
    assert result.summary["purpose"] == "check"
    assert result.summary["steps"] == Config().sanity_steps
    assert codes(result.findings) == set()
    assert [c["status"] for c in result.summary["checks"]] == ["pass", "pass"]
    unlearnable = run_check(load_model_file(FIXTURES / "check_unlearnable.py"), Config(), progress=False)
    assert codes(unlearnable.findings) == EXPECTED["check_unlearnable.py"]


def _trend(record: dict) -> Trend:
    return Trend(record["loss_start"], record["loss_end"], record["relative_drop"], record["noise"], record["steps"])


def test_the_rule_is_invariant_to_the_scale_of_a_real_run(profiled):
    config = Config()
    for name in ("check_healthy.py", "check_unlearnable.py", "check_diverging.py"):
        for record in (r for r in profiled(name).records if r.get("kind") == "check"):
            trend = _trend(record)
            scaled = Trend(trend.start * 1e3, trend.end * 1e3, trend.relative_drop, trend.noise, trend.steps)
            assert assess(scaled, config) == assess(trend, config)
            assert assess(trend, config).status == record["status"]


def test_the_noise_is_read_both_ways(profiled):
    """A clear drop passes; the same drop inside a wide noise is inconclusive; a slow clear drop passes with its
    figure; a rise inside the noise is no error; a clear rise past check_max_rise diverges."""
    config = Config()
    record = next(r for r in profiled("check_healthy.py").records if r.get("kind") == "check")
    trend = _trend(record)
    assert record["noise"] > 0 and assess(trend, config).status == "pass"
    wide = trend.relative_drop / config.check_noise_z * 2
    inconclusive = assess(Trend(1.0, 1 - trend.relative_drop, trend.relative_drop, wide, 100), config)
    assert inconclusive.status == "skipped" and inconclusive.reason.startswith("inconclusive")
    slow = assess(Trend(1.0, 0.98, 0.02, 0.002, 100), config)
    assert slow.status == "pass" and "-2.0%" in slow.reason and "slow" in slow.reason
    rise_in_noise = assess(Trend(1.0, 1.6, -0.6, 0.3, 100), config)
    assert rise_in_noise.status == "skipped"
    assert assess(Trend(1.0, 1.6, -0.6, 0.01, 100), config).code == "diverging"
    assert assess(Trend(1.0, 1.01, -0.01, 0.005, 100), config).code == "not-decreasing"


def test_opposed_terms_are_a_trade_off():
    """Two terms regressed to y and -y: no weight serves both (trade-off); the term that falls is not `opposed`."""
    result = lossdiag.profile(str(FIXTURES / "opposed.py"), progress=False)
    summary = result.summary
    assert "gradient-conflict" in {f.code for f in result.findings}
    assert [c["status"] for c in summary["checks"]] == ["pass", "pass"]
    assert summary["recommendation"] == "trade-off"
    rising = [t for t, seen in summary["situations"].items() if seen["combined"] > seen["start"]]
    assert set(summary["opposed"]) <= set(rising) and set(rising) < set(summary["terms"])
    for finding in (f for f in result.findings if f.code == "opposed"):
        seen = summary["situations"][finding.terms[0]]
        assert finding.severity == "warning" and seen["combined"] > seen["start"]


def test_the_term_that_blew_up_is_blamed_before_the_one_it_poisoned(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(10, 64), torch.nn.ReLU(), torch.nn.Linear(64, 2))
    optimizer = torch.optim.SGD(model.parameters(), 0.01)
    with lossdiag.Monitor(model, out=tmp_path, every=10) as monitor:
        for _ in range(30):
            x = torch.randn(32, 10)
            out = model(x)
            loss = monitor.combine({"steady": F.mse_loss(out[:, 0], x[:, 0]),
                                    "exploding": 50 * F.mse_loss(out[:, 1], x[:, 1])})
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    summary = json.loads((tmp_path / "summary.json").read_text())
    nonfinite = [f for f in summary["findings"] if f["code"] == "non-finite"]
    assert nonfinite and nonfinite[0]["terms"] == ["exploding"]
    assert "'exploding'" in summary["verdict"]
