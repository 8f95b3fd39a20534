"""The Python API: model files and objects, a caller's model and RNG left alone, --refine, save()."""
import json
import random

import numpy as np
import pytest
import torch

import lossdiag
from models import DeepSupervision, deep_supervision_batch, deep_supervision_terms


def test_objects_are_profiled_on_a_copy_and_rng_states_are_restored():
    torch.manual_seed(5)
    model = DeepSupervision()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch_state, python_state, numpy_state = torch.get_rng_state(), random.getstate(), np.random.get_state()
    result = lossdiag.profile(model, [deep_supervision_batch(s) for s in range(3)], deep_supervision_terms,
                              steps=6, no_checks=True)
    assert result.summary["steps"] == 6
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert random.getstate() == python_state
    assert np.array_equal(np.random.get_state()[1], numpy_state[1])


def test_a_one_shot_generator_of_batches_is_replayed():
    batches = (deep_supervision_batch(s) for s in range(2))
    result = lossdiag.profile(DeepSupervision, batches, deep_supervision_terms, steps=5, no_checks=True)
    assert result.summary["steps"] == 5


def test_bad_objects_raise_spec_error_with_the_cli_line():
    def per_sample(model, batch):
        logits, _ = model(batch[0])
        return {"bad": logits.sum(dim=1)}

    with pytest.raises(lossdiag.SpecError, match=r"term 'bad' must be a scalar tensor, got shape \(20,\)"):
        lossdiag.profile(DeepSupervision, [deep_supervision_batch()], per_sample, steps=2)
    with pytest.raises(ValueError, match="nn.Module or a function"):
        lossdiag.profile(42, [deep_supervision_batch()], deep_supervision_terms)
    with pytest.raises(lossdiag.SpecError, match="--every 5 is larger than --steps 2"):
        lossdiag.profile(DeepSupervision, [deep_supervision_batch()], deep_supervision_terms, steps=2, every=5)


def test_refine_reprofiles_under_the_suggestion_and_reports_the_shares_it_gave(examples):
    result = lossdiag.profile(str(examples / "two_outputs.py"), steps=120, refine=1, no_checks=True)
    rounds = result.summary["refinement"]
    assert len(rounds) == 1
    first_round = rounds[0]
    assert first_round["weights"]["regression"] < 0.05
    assert all(0.25 <= share <= 0.75 for share in first_round["dominance"].values())
    assert sum(result.summary["suggested_weights"].values()) == pytest.approx(1.0)
    assert result.summary["suggested_weights"] != first_round["weights"]


def test_save_writes_summary_and_records(tmp_path):
    result = lossdiag.profile(DeepSupervision, [deep_supervision_batch()], deep_supervision_terms, steps=3,
                              no_checks=True)
    result.save(tmp_path)
    assert json.loads((tmp_path / "summary.json").read_text())["terms"] == ["classification", "regression"]
    lines = (tmp_path / "records.jsonl").read_text().splitlines()
    kinds = [json.loads(line)["kind"] for line in lines]
    assert kinds[0] == "meta" and "end" in kinds


def test_a_shuffling_dataloader_leaves_every_rng_state_as_it_was():
    data = torch.utils.data.TensorDataset(torch.randn(32, 6), torch.randn(32))
    loader = torch.utils.data.DataLoader(data, batch_size=8, shuffle=True)

    def terms(model, batch):
        x, y = batch
        logits, value = model(x)
        return {"deep": logits.pow(2).mean(), "out": (value - y).pow(2).mean()}

    model = DeepSupervision()
    torch.manual_seed(11)
    random.seed(11)
    np.random.seed(11)
    torch_state, python_state, numpy_state = torch.get_rng_state(), random.getstate(), np.random.get_state()
    lossdiag.profile(model, loader, terms, steps=5, no_checks=True)
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert random.getstate() == python_state
    assert np.array_equal(np.random.get_state()[1], numpy_state[1])


def test_objects_are_judged_on_the_validation_batches_given():
    batches = [deep_supervision_batch(s) for s in range(3)]
    held_out = [deep_supervision_batch(s) for s in range(100, 102)]
    options = dict(steps=6, check_steps=4, no_checks=True)
    on_probe = lossdiag.profile(DeepSupervision, batches, deep_supervision_terms, **options)
    on_held_out = lossdiag.profile(DeepSupervision, batches, deep_supervision_terms, validation_batches=held_out,
                                   **options)
    assert on_probe.summary["outcome"]["on"] == "probe"
    assert on_held_out.summary["outcome"]["on"] == "validation"
    assert on_held_out.summary["outcome"]["in_force"] != on_probe.summary["outcome"]["in_force"]
    with pytest.raises(lossdiag.SpecError, match="validation_batches"):
        lossdiag.profile("model.py", validation_batches=held_out)
