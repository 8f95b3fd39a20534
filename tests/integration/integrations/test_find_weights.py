"""Advice where users train: the Monitor, the Lightning callback and the HF Trainer print no unverified weights as a
recommendation, and find_weights verifies them from the same state, as the CLI would, leaving the fit unchanged."""
from __future__ import annotations

import json

import pytest
import torch

import lossdiag
from inloop_models import AUX_BY_DESIGN, batch_loader, hf_trainer, lightning_module, lightning_trainer, spec_of
from paths import EXAMPLES

pl = pytest.importorskip("lightning.pytorch", reason="the lightning extra is not installed")
transformers = pytest.importorskip("transformers", reason="the transformers extra is not installed")
pytest.importorskip("accelerate", reason="the transformers extra is not installed (accelerate)")

from lossdiag.integrations import lightning as in_lightning  # noqa: E402
from lossdiag.integrations import transformers as in_transformers  # noqa: E402

STEPS = 30
OPTIONS = {"steps": 40, "check_steps": 80, "every": 4, "progress": False}
KEEPS = {"steps": 60, "progress": False}   # the profile test_advice holds to `keep` on the aux head by design


@pytest.fixture(scope="module")
def profile_keeps() -> None:
    """The profile of the aux head by design says keep (as test_advice holds it to)."""
    assert lossdiag.profile(str(AUX_BY_DESIGN), **KEEPS).summary["recommendation"] == "keep"


def monitor_summary(tmp_path) -> dict:
    """The model file's loop, by hand, with a Monitor."""
    spec = spec_of()
    model = spec.build_model()
    optimizer = spec.make_optimizer(model.parameters())
    with lossdiag.Monitor(model, out=tmp_path / "monitor", every=3) as monitor:
        for _, batch in zip(range(STEPS), spec.batches()):
            loss = monitor.combine(spec.losses(model, batch), dict(spec.weights))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return monitor.summary()


def callback_summary(tmp_path) -> dict:
    spec = spec_of()
    callback = in_lightning.LossDiagCallback(out=tmp_path / "lightning", every=3)
    lightning_trainer(tmp_path, STEPS, [callback]).fit(lightning_module(spec), batch_loader(spec))
    return callback.summary


def trainer_summary(tmp_path) -> dict:
    trainer = hf_trainer(spec_of(), tmp_path, STEPS, {"out": tmp_path / "hf-run", "every": 3})
    trainer.train()
    return trainer.lossdiag_summary


@pytest.mark.parametrize("tool, verify", [(monitor_summary, "lossdiag.profile(model, batches, losses"),
                                          (callback_summary, "lightning.find_weights(trainer, model)"),
                                          (trainer_summary, "transformers.find_weights(trainer)")],
                         ids=["monitor", "lightning", "hf"])
def test_in_loop_advice_on_a_model_the_profile_keeps_is_a_candidate_to_verify_never_reweight(tmp_path, profile_keeps,
                                                                                             tool, verify):
    summary = tool(tmp_path)
    assert summary["dominant_term"] == "main"
    assert summary["recommendation"] != "reweight" and summary["verification"] is None
    assert summary["recommended_weights"] == summary["weights"]
    assert set(summary["candidate_weights"]) == {"main", "aux"} and summary["candidate_weights"] != summary["weights"]
    assert "reweight" not in summary["verdict"] and verify in summary["verdict"]
    page = next(tmp_path.rglob("report.html")).read_text()
    assert "Candidate weights" in page and "Paste this" not in page
    assert json.loads(next(tmp_path.rglob("summary.json")).read_text()) == summary


def lightning_find(tmp_path, model_file, **options) -> dict:
    spec = spec_of(model_file)
    module = lightning_module(spec)
    held_out = batch_loader(spec, validation=True) if spec.validation_batches else None
    return in_lightning.find_weights(lightning_trainer(tmp_path, STEPS, []), module,
                                     train_dataloaders=batch_loader(spec), val_dataloaders=held_out, **options).summary


def transformers_find(tmp_path, model_file, **options) -> dict:
    return in_transformers.find_weights(hf_trainer(spec_of(model_file), tmp_path, STEPS), **options).summary


@pytest.mark.parametrize("model_file", [AUX_BY_DESIGN, EXAMPLES / "two_outputs.py"], ids=["aux-head", "readme-example"])
def test_find_weights_gives_the_cli_recommendation_on_the_same_model(tmp_path, model_file):
    """Both model files have validation_batches(): the fit's validation data (val_dataloaders, eval_dataset) there."""
    cli = lossdiag.profile(str(model_file), **OPTIONS).summary
    assert cli["outcome"]["on"] == "validation"
    assert cli["recommendation"] == "reweight" or model_file == AUX_BY_DESIGN, "the README example's rescue"
    for found in (lightning_find(tmp_path, model_file, **OPTIONS), transformers_find(tmp_path, model_file, **OPTIONS)):
        assert found["recommendation"] == cli["recommendation"] and found["outcome"]["on"] == "validation"
        assert found["recommended_weights"] == pytest.approx(cli["recommended_weights"], rel=1e-3)
        assert found["outcome"]["in_force"] == pytest.approx(cli["outcome"]["in_force"], rel=1e-3)
        assert found["terms"] == cli["terms"] and found["weights"] == cli["weights"]


QUICK = {"steps": 8, "check_steps": 10, "every": 4, "progress": False}


def state_of(model: torch.nn.Module, optimizer) -> list[torch.Tensor]:
    """Every parameter, and every tensor of the optimizer's state, in order."""
    tensors = [p.detach().clone() for p in model.parameters()]
    for values in optimizer.state_dict()["state"].values() if optimizer is not None else []:
        tensors += [v.clone() for v in values.values() if isinstance(v, torch.Tensor)]
    return tensors


def assert_bitwise(a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
    assert len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


def lightning_fit(tmp_path, find: bool) -> tuple[list[torch.Tensor], torch.Tensor]:
    """A fit with the callback on shuffled batches, after find_weights or not; then find_weights between fits must
    leave the module and the trainer's optimizer as they were."""
    spec = spec_of()
    module = lightning_module(spec)
    loader = torch.utils.data.DataLoader(batch_loader(spec).dataset, batch_size=None, shuffle=True)
    trainer = lightning_trainer(tmp_path, STEPS, [in_lightning.LossDiagCallback(out=tmp_path / "run", every=3)])
    if find:
        in_lightning.find_weights(trainer, module, train_dataloaders=loader, **QUICK)
    trainer.fit(module, loader)
    fitted, rng = state_of(module, trainer.optimizers[0]), torch.get_rng_state()
    in_lightning.find_weights(trainer, module, train_dataloaders=loader, **QUICK)
    assert_bitwise(state_of(module, trainer.optimizers[0]), fitted)
    assert torch.equal(torch.get_rng_state(), rng)
    return fitted, rng


def transformers_train(tmp_path, find: bool) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Training after find_weights or not; then find_weights after training must leave the model and the
    Trainer's optimizer as they were."""
    trainer = hf_trainer(spec_of(), tmp_path, STEPS, {"out": tmp_path / "run", "every": 3})
    if find:
        in_transformers.find_weights(trainer, **QUICK)
    trainer.train()
    trained, rng = state_of(trainer.model, trainer.optimizer), torch.get_rng_state()
    in_transformers.find_weights(trainer, **QUICK)
    assert_bitwise(state_of(trainer.model, trainer.optimizer), trained)
    assert torch.equal(torch.get_rng_state(), rng)
    return trained, rng


@pytest.mark.parametrize("train", [lightning_fit, transformers_train], ids=["lightning", "hf"])
def test_find_weights_leaves_the_fit_bitwise_what_it_is_without_it(tmp_path, train):
    torch.manual_seed(1)
    plain, plain_rng = train(tmp_path / "plain", find=False)
    torch.manual_seed(1)
    found, found_rng = train(tmp_path / "found", find=True)
    assert_bitwise(found, plain)
    assert torch.equal(found_rng, plain_rng)


def test_find_weights_after_a_schedule_that_ends_at_zero_says_so_in_one_line(tmp_path):
    trainer = hf_trainer(spec_of(), tmp_path, 6, schedule="linear", own_optimizer=True)
    trainer.train()
    with pytest.raises(lossdiag.SpecError, match="learning rate is 0 .* call find_weights before training"):
        in_transformers.find_weights(trainer, **QUICK)
