"""The shared primitive: a fresh model trained from the run's start under given weights, measured on the probe."""
import torch

from lossdiag.train.probe import draw_probe
from lossdiag.train.runs import train_alone, train_under
from lossdiag.config import Config
from lossdiag.train.loop import initial_state
from lossdiag.train.spec import load_model_file
from paths import FIXTURES


def _setup(name="check_healthy.py"):
    spec = load_model_file(FIXTURES / name)
    config = Config(seed=3)
    return spec, config, initial_state(spec, config), draw_probe(spec, 4, config.seed)


def test_a_run_is_reproducible_and_its_progress_is_the_probe_drop():
    spec, config, start, probe = _setup()
    weights = {"classification": 1.0, "regression": 0.5, "flag": 2.0}
    first = train_under(spec, config, start, weights, probe, 12)
    second = train_under(spec, config, start, weights, probe, 12)
    assert first.progress == second.progress and first.losses == second.losses
    fresh = spec.build_model()
    fresh.load_state_dict(start)
    assert first.before == probe.evaluate(spec, fresh)
    assert first.after == probe.evaluate(spec, first.model)
    for term, value in first.progress.items():
        assert value == (first.before[term] - first.after[term]) / abs(first.before[term])
        assert value > 0 and first.noise[term] > 0
    assert len(first.losses) == 12 and first.skipped_updates == 0


def test_a_term_alone_is_weight_one_and_the_others_zero():
    spec, config, start, probe = _setup()
    terms = ["classification", "regression", "flag"]
    alone = train_alone(spec, config, start, "regression", terms, probe, 12)
    assert alone.weights == {"classification": 0.0, "regression": 1.0, "flag": 0.0}
    assert alone.progress == train_under(spec, config, start, alone.weights, probe, 12).progress
    untouched = {name: p for name, p in alone.model.named_parameters() if name.startswith(("classify", "flag"))}
    fresh = spec.build_model()
    fresh.load_state_dict(start)
    assert all(torch.equal(p, dict(fresh.named_parameters())[name]) for name, p in untouched.items())


def test_non_finite_updates_are_skipped_as_the_profile_does():
    spec, config, start, probe = _setup("check_nan.py")
    run = train_under(spec, config, start, {"classification": 1.0, "regression": 1.0}, probe, 40)
    bad = sum(1 for values in run.losses if values["regression"] != values["regression"])
    assert bad > 0 and run.skipped_updates == bad
    assert all(torch.isfinite(p).all() for p in run.model.parameters())
    only_classification = train_under(spec, config, start, {"classification": 1.0}, probe, 40)
    assert only_classification.skipped_updates == 0
