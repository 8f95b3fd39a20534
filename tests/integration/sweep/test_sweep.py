"""lossdiag.sweep: the grid, the choice of point, real sweeps on model files and objects, broken validate()."""
import json
import math
import random
import runpy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import lossdiag
from lossdiag.record.stream import read_records
from lossdiag.analyse.outcome import change
from lossdiag.config import Config
from lossdiag.sweep.choose import by_metric, by_rule, pareto
from lossdiag.sweep.grid import candidates
from lossdiag.sweep.records import SweepData
from lossdiag.sweep.run import estimate_line
from models import DeepSupervision, deep_supervision_batch, deep_supervision_terms

QUICK = {"steps": 30, "sweep_steps": 60, "points": 5, "jobs": 1}


def odds(alpha):
    return alpha / (1 - alpha)


def test_two_terms_get_alphas_on_a_logit_grid_a_factor_100_either_side_of_the_suggestion():
    grid = candidates(["a", "b"], {"a": 0.002, "b": 0.998}, {"a": 1.0, "b": 3.0}, 9)
    alphas = [c.alpha for c in grid]
    assert alphas == sorted(alphas) and len(grid) == 10
    ratios = [odds(a) / odds(0.002) for a in alphas if a != 0.25]
    assert min(ratios) == pytest.approx(0.01) and max(ratios) == pytest.approx(100)
    assert np.allclose(np.diff(np.log10(ratios)), 0.5)
    current = [c for c in grid if c.current]
    assert len(current) == 1 and current[0].alpha == pytest.approx(0.25)
    assert all(sum(c.weights.values()) == pytest.approx(4.0) for c in grid)
    near = candidates(["a", "b"], {"a": 0.5001, "b": 0.4999}, {"a": 1.0, "b": 1.0}, 9)
    assert len(near) == 9 and [c.alpha for c in near if c.current] == [0.5]


def test_more_terms_scale_each_weight_up_and_down_around_the_suggestion():
    suggested = {"a": 0.5, "b": 0.3, "c": 0.2}
    grid = candidates(["a", "b", "c"], suggested, {"a": 1.0, "b": 1.0, "c": 1.0}, 13)
    assert grid[0].scaled is None and grid[0].weights == pytest.approx({k: 3 * v for k, v in suggested.items()})
    for term in "abc":
        factors = sorted(c.factor for c in grid if c.scaled == term)
        assert factors == pytest.approx([0.01, 0.1, 10, 100])
    point = next(c for c in grid if c.scaled == "b" and c.factor == 100)
    assert point.weights["b"] / point.weights["a"] == pytest.approx(100 * 0.3 / 0.5)
    assert all(sum(c.weights.values()) == pytest.approx(3.0) for c in grid)
    assert grid[-1].current and grid[-1].weights == pytest.approx({"a": 1.0, "b": 1.0, "c": 1.0})


def test_a_grid_needs_three_points_and_two_terms():
    with pytest.raises(lossdiag.SpecError, match="--points must be at least 3"):
        candidates(["a", "b"], {"a": 0.5, "b": 0.5}, {"a": 1.0, "b": 1.0}, 2)
    with pytest.raises(lossdiag.SpecError, match="at least two terms"):
        candidates(["a"], {"a": 1.0}, {"a": 1.0}, 9)


def _ends(a, b):
    return [{"a": a * j, "b": b * j} for j in (0.99, 1.01, 1.0, 0.995, 1.005, 1.0)]


def test_the_front_and_both_criteria_on_plain_data():
    progress = [{"a": 0.9, "b": 0.1}, {"a": 0.6, "b": 0.5}, {"a": 0.5, "b": 0.4}, {"a": 0.2, "b": 0.8},
                {"a": None, "b": 0.9}]
    assert pareto(progress, ["a", "b"]) == [0, 1, 3]
    start, alone = _ends(2.0, 2.0), {"a": _ends(0.2, 2.0), "b": _ends(2.0, 0.2)}
    points = [{"weights": {"a": 1.0, "b": 1.0}, "current": True, "end_batches": _ends(0.2, 1.5)},
              {"weights": {"a": 1.0, "b": 3.0}, "end_batches": _ends(0.21, 0.5)},
              {"weights": {"a": 1.0, "b": 10.0}, "end_batches": _ends(0.3, 0.3)},
              {"weights": {"a": 1.0, "b": 0.1}, "end_batches": _ends(0.2, 1.9)}]
    choice = by_rule(points, alone, start, ["a", "b"], Config())
    assert choice.index == 1 and not choice.kept, "b 3x better while a pays 5%, within the 10% bound"
    assert choice.scores[0] == 0.0 and choice.scores[2] > choice.scores[1], "the costlier point serves more"
    assert by_rule(points, alone, start, ["a", "b"], Config(main=["a"])).kept, "main 'a' may pay nothing"
    kept = by_rule(points[:1] + points[3:], alone, start, ["a", "b"], Config())
    assert kept.kept and kept.index == 0 and "the weights in force are kept" in kept.criterion
    metrics = [{"err": 3.0, "acc_max": 0.2}, {"err": 1.0, "acc_max": 0.9}, {"err": math.nan, "acc_max": 0.95}]
    assert by_metric(metrics, "err").index == 1 and by_metric(metrics, "acc_max").index == 2
    assert "lowest err" in by_metric(metrics, "err").criterion


def _costs(result, point):
    """Each term's change at the end of `point` against the point in force, with its noise (the rule's yardstick)."""
    current = next(p for p in result.data.points if p.get("current"))
    return {t: change(point["end_batches"], current["end_batches"], t) for t in result.summary["terms"]}


@pytest.fixture(scope="module")
def tradeoff(tmp_path_factory):
    from conftest import FIXTURES

    out = tmp_path_factory.mktemp("tradeoff")
    return lossdiag.sweep(FIXTURES / "sweep_tradeoff.py", metric="held_out_error", out=str(out),
                          **{**QUICK, "points": 9, "sweep_steps": 100}), out


def test_the_metric_picks_the_grid_point_nearest_the_optimum_known_by_construction(tradeoff, fixtures):
    best_alpha = runpy.run_path(str(fixtures / "sweep_tradeoff.py"))["BEST_ALPHA"]
    result, _ = tradeoff
    alphas = [p["alpha"] for p in result.points]
    nearest = min(range(len(alphas)), key=lambda k: abs(alphas[k] - best_alpha))
    assert result.summary["recommended"] == nearest and result.recommended == result.points[nearest]
    errors = [p["metrics"]["held_out_error"] for p in result.points]
    assert errors.index(min(errors)) == nearest
    assert len(result.summary["pareto"]) >= 4
    assert result.summary["criterion"] == "the lowest held_out_error from validate(model)"


def test_a_max_metric_is_maximised(tradeoff):
    result, out = tradeoff
    records = list(result.records)
    records[0] = {**records[0], "config": {**records[0]["config"], "metric": "agreement_max"}}
    again = SweepData.from_records(records)
    assert again.choice.index == result.data.choice.index
    assert again.choice.criterion.startswith("the highest agreement_max")


def test_outputs_are_written_and_rebuilt_from_the_records_alone(tradeoff):
    result, out = tradeoff
    written = json.loads((out / "sweep.json").read_text())
    assert written == result.summary
    assert {"terms", "points", "pareto", "recommended", "criterion"} <= set(written)
    assert set(written["points"][0]) >= {"weights", "alpha", "progress", "final", "metrics"}
    records, torn = read_records(out / "sweep_records.jsonl")
    assert not torn and SweepData.from_records(records).to_json() == result.data.to_json()
    assert (out / "sweep.png").stat().st_size > 10_000 and "lossdiag sweep" in (out / "sweep.html").read_text()
    assert "<table>" in result._repr_html_()


def test_the_dominated_term_is_rescued_without_a_metric_by_the_profiles_rule(examples):
    result = lossdiag.sweep(examples / "two_outputs.py", **QUICK)
    config = Config()
    current = next(p for p in result.points if p["current"])
    best = result.recommended
    assert current["alpha"] == 0.5 and best["alpha"] > 0.5 and not result.summary["kept"]
    found = _costs(result, result.data.recommended)
    assert found["classification"].change <= -config.min_gain
    assert found["regression"].change <= config.max_cost or found["regression"].clear(config.check_noise_z) <= 0
    assert result.summary["criterion"].startswith("the one rule")


def test_three_terms_scale_each_term_and_the_point_chosen_obeys_the_rule(fixtures, tmp_path):
    result = lossdiag.sweep(fixtures / "sweep_three.py", out=str(tmp_path), **{**QUICK, "points": 7})
    terms, config = result.summary["terms"], Config()
    assert {p["scaled"] for p in result.points} == {None, *terms}
    chosen = result.data.recommended
    if result.summary["kept"]:
        assert chosen.get("current")
    else:
        found = _costs(result, chosen)
        assert any(c.change <= -config.min_gain for c in found.values())
        assert all(c.change <= config.max_cost or c.clear(config.check_noise_z) <= 0 for c in found.values())
        assert result.recommended["score"] > 0, "the point chosen serves the terms better than the weights in force"
    assert (tmp_path / "sweep.png").is_file()


def _objects_sweep(validate, **options):
    return lossdiag.sweep(DeepSupervision, [deep_supervision_batch(s) for s in range(3)], deep_supervision_terms,
                          validate=validate, **{**QUICK, "sweep_steps": 5, "steps": 5, **options})


def _changing_names():
    calls = []

    def validate(model):
        calls.append(1)
        return {"loss": 1.0} if len(calls) == 1 else {"other": 1.0}

    return validate


@pytest.mark.parametrize("validate, options, message", [
    (lambda model: 1 / 0, {}, r"validate\(model\) raised ZeroDivisionError: division by zero"),
    (lambda model: [0.5], {}, r"validate\(model\) must return a non-empty mapping of metric name to number"),
    (lambda model: {}, {}, r"validate\(model\) must return a non-empty mapping"),
    (lambda model: {"acc": "high"}, {}, r"returned 'high' for metric 'acc'; each metric must be a number"),
    (lambda model: {"acc": torch.ones(3)}, {}, r"returned a tensor of shape \(3,\) for metric 'acc'"),
    (lambda model: {"acc": True}, {}, r"returned True for metric 'acc'"),
    (lambda model: {"acc": 0.5}, {"metric": "loss"}, r"--metric 'loss' is not among the metrics .*: acc"),
    (None, {"metric": "loss"}, r"--metric 'loss' needs a validate\(model\) function"),
    (_changing_names(), {}, r"returned the metrics \['other'\] after \['loss'\]"),
])
def test_a_broken_validate_or_metric_is_a_usage_error_naming_it(validate, options, message):
    with pytest.raises(lossdiag.SpecError, match=message) as raised:
        _objects_sweep(validate, **options)
    assert "\n" not in str(raised.value)


def test_validate_objects_go_with_objects(examples):
    with pytest.raises(lossdiag.SpecError, match="validate= goes with objects"):
        lossdiag.sweep(examples / "two_outputs.py", validate=lambda model: {"a": 1.0})


def test_validate_sees_the_model_in_eval_mode_without_gradients_and_tensors_are_numbers():
    seen = []

    def validate(model):
        seen.append((model.training, torch.is_grad_enabled()))
        return {"mse": F.mse_loss(model(deep_supervision_batch(9)[0])[1], torch.zeros(20)), "count": 3}

    result = _objects_sweep(validate)
    assert set(seen) == {(False, False)}
    assert all(isinstance(p["metrics"]["mse"], float) and p["metrics"]["count"] == 3.0 for p in result.points)


def test_objects_are_swept_on_copies_and_rng_states_are_restored():
    torch.manual_seed(5)
    model = DeepSupervision()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    states = torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy()
    lossdiag.sweep(model, [deep_supervision_batch(s) for s in range(3)], deep_supervision_terms,
                   **{**QUICK, "sweep_steps": 5, "steps": 5})
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert torch.equal(torch.get_rng_state(), states[0]) and random.getstate() == states[1]
    assert np.array_equal(np.random.get_state()[1], states[2])


def test_the_estimate_counts_what_is_left_per_process():
    assert estimate_line(2.0, 11, 2) == "sweep: the first run took 2.0 s; 11 more, 2 at a time: about 12 s left"
    assert estimate_line(0.1, 3, 1).endswith("under a second left")


def test_a_time_estimate_comes_before_the_long_part(capsys):
    _objects_sweep(None, progress=True)
    assert "sweep: the first run took" in capsys.readouterr().err
    _objects_sweep(None, progress=False)
    assert capsys.readouterr().err == ""


@pytest.mark.slow
def test_the_sweep_notebook_runs_and_shows_the_sweep_inline(examples, tmp_path, monkeypatch):
    notebook = json.loads((examples / "sweep_in_a_notebook.ipynb").read_text())
    namespace: dict = {}
    monkeypatch.chdir(tmp_path)
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            exec(compile("".join(cell["source"]), "notebook-cell", "exec"), namespace)
    result = namespace["result"]
    assert isinstance(result, lossdiag.SweepResult) and result.recommended is not None
    assert "<iframe" not in result._repr_html_() and "accuracy_max" in result._repr_html_()
    assert (tmp_path / "lossdiag-sweep-notebook" / "sweep.html").is_file()
