"""Every option a Monitor is given reaches its summary (issue 16, item 4): target_shares and each threshold passed in
`config=`, through a real training loop, through the Lightning callback, and the same as the profile shows."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import lossdiag
from lossdiag import Monitor
from lossdiag.config import FIELDS

TARGETS = {"classification": 0.7, "regression": 0.3}
SET_BY_THE_MONITOR = {"every", "out"}
GIVEN = {"device": "cpu", "metric": "val_loss", "weights": {"classification": 0.5, "regression": 2.0},
         "target_shares": TARGETS, "main": ["classification"], "jobs": 2}


def changed(name: str) -> object:
    """A valid value other than the default for every option (numbers halved or one more, flags flipped)."""
    if name in GIVEN:
        return GIVEN[name]
    default = FIELDS[name].default
    if isinstance(default, bool):
        return not default
    return default + 1 if isinstance(default, int) else default / 2


OPTIONS = {name: changed(name) for name in FIELDS if name not in SET_BY_THE_MONITOR}
THRESHOLDS = ("dominance_threshold", "conflict_cosine", "target_shares", "starved_ratio", "check_min_drop",
              "check_noise_z", "check_max_rise", "max_cost", "min_gain", "main")


class TwoHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(6, 16), nn.Tanh())
        self.classify = nn.Linear(16, 3)
        self.regress = nn.Linear(16, 1)

    def terms(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.trunk(x)
        return {"classification": F.cross_entropy(self.classify(h), x[:, :3].argmax(1)),
                "regression": F.mse_loss(self.regress(h).squeeze(-1), 30.0 * x.sum(1))}


def batches(count: int = 12) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(8, 6, generator=g) for _ in range(count)]


def assert_shows_every_option(summary: dict, options: dict) -> None:
    assert not set(FIELDS) - SET_BY_THE_MONITOR - set(options), "an option has no changed value in this test"
    shown = {name: summary["config"][name] for name in options}
    assert shown == options
    assert summary["target_shares"] == pytest.approx(TARGETS)
    assert summary["dominance_threshold"] == options["dominance_threshold"]
    assert summary["conflict_threshold"] == options["conflict_cosine"]


def test_a_monitor_shows_every_option_it_was_given_in_its_summary(tmp_path):
    torch.manual_seed(0)
    model = TwoHeads()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    config = {name: value for name, value in OPTIONS.items() if name != "target_shares"}
    monitor = Monitor(model, out=tmp_path, every=2, config=config, target_shares=TARGETS)
    for x in batches():
        loss = monitor.combine(model.terms(x), {"classification": 1.0, "regression": 0.01})
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert_shows_every_option(monitor.summary(), OPTIONS)
    closed = monitor.close()
    assert_shows_every_option(closed, OPTIONS)
    assert_shows_every_option(json.loads((tmp_path / "summary.json").read_text()), OPTIONS)
    assert closed["config"]["every"] == 2 and closed["config"]["out"] == str(tmp_path)


def test_a_yaml_config_reaches_the_summary_as_the_mapping_does(tmp_path):
    yaml = pytest.importorskip("yaml")
    (tmp_path / "lossdiag.yaml").write_text(yaml.safe_dump(OPTIONS))
    torch.manual_seed(0)
    model = TwoHeads()
    with Monitor(model, out=tmp_path / "run", every=2, config=tmp_path / "lossdiag.yaml") as monitor:
        for x in batches(6):
            monitor.combine(model.terms(x)).backward()
    assert_shows_every_option(json.loads((tmp_path / "run" / "summary.json").read_text()), OPTIONS)


def test_the_profile_shows_the_same_options_as_the_monitor(tmp_path):
    profile_options = {name: OPTIONS[name] for name in THRESHOLDS}
    result = lossdiag.profile(lambda: TwoHeads(), batches(4), lambda m, x: m.terms(x), steps=4, every=1,
                              no_checks=True, no_verify=True, **profile_options)
    torch.manual_seed(0)
    model = TwoHeads()
    with Monitor(model, out=tmp_path, every=1, config=profile_options) as monitor:
        for x in batches(4):
            monitor.combine(model.terms(x)).backward()
    monitored = json.loads((tmp_path / "summary.json").read_text())
    for name in profile_options:
        assert result.summary["config"][name] == monitored["config"][name] == profile_options[name], name
    assert result.summary["target_shares"] == pytest.approx(monitored["target_shares"])


def test_the_lightning_callback_hands_every_option_to_the_monitor(tmp_path):
    pl = pytest.importorskip("lightning.pytorch", reason="the lightning extra is not installed")
    from torch.utils.data import DataLoader

    from lossdiag.integrations.lightning import LossDiagCallback

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.heads = TwoHeads()

        def training_step(self, batch, batch_idx):
            return self.lossdiag.combine(self.heads.terms(batch), {"classification": 1.0, "regression": 0.01})

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=1e-2)

    config = {name: value for name, value in OPTIONS.items() if name != "target_shares"}
    callback = LossDiagCallback(out=tmp_path / "run", every=2, config=config, target_shares=TARGETS)
    pl.seed_everything(0, verbose=False)
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=8, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[callback])
    trainer.fit(Module(), DataLoader(batches(8), batch_size=None))
    assert_shows_every_option(callback.summary, OPTIONS)
    assert_shows_every_option(json.loads((tmp_path / "run" / "summary.json").read_text()), OPTIONS)


def test_the_transformers_trainer_hands_every_option_to_the_monitor(tmp_path):
    transformers = pytest.importorskip("transformers", reason="the transformers extra is not installed")
    pytest.importorskip("accelerate", reason="the transformers extra is not installed (accelerate)")
    from lossdiag.integrations.transformers import LossDiagTrainer

    class Trainer(LossDiagTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            return self.lossdiag.combine(model.terms(inputs["x"]), {"classification": 1.0, "regression": 0.01})

    config = {name: value for name, value in OPTIONS.items() if name != "target_shares"}
    transformers.set_seed(0)
    args = transformers.TrainingArguments(output_dir=str(tmp_path / "hf"), max_steps=6, per_device_train_batch_size=8,
                                          save_strategy="no", use_cpu=True, disable_tqdm=True, report_to=[],
                                          remove_unused_columns=False)
    trainer = Trainer(model=TwoHeads(), args=args, train_dataset=[{"x": row} for x in batches(6) for row in x],
                      lossdiag={"out": tmp_path / "run", "every": 2, "config": config, "target_shares": TARGETS})
    trainer.train()
    assert_shows_every_option(trainer.lossdiag_summary, OPTIONS)
