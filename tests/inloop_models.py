"""One model file's model, data and losses, trained three ways: a plain loop, a Lightning fit and a Hugging Face
Trainer, so that lossdiag's advice in each can be compared with the CLI's on the same model."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch
from torch.utils.data import DataLoader, Dataset

from lossdiag.train.spec import ModelSpec, load_model_file
from paths import FIXTURES

AUX_BY_DESIGN = FIXTURES / "advice_aux_by_design.py"


def spec_of(path: Path = AUX_BY_DESIGN) -> ModelSpec:
    return load_model_file(path)


class Batches(Dataset):
    """The model file's batches (or its validation batches) as a dataset of whole batches (a DataLoader with
    batch_size=None replays them)."""

    def __init__(self, spec: ModelSpec, validation: bool = False) -> None:
        self.batches = list(spec.validation_batches() if validation else spec.batches())

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> Any:
        return self.batches[index]


def batch_loader(spec: ModelSpec, validation: bool = False) -> DataLoader:
    return DataLoader(Batches(spec, validation), batch_size=None)


def lightning_module(spec: ModelSpec, plain: bool = False) -> Any:
    """A LightningModule whose training step is the model file's losses, summed by the monitor (or by hand)."""
    import lightning.pytorch as pl

    class FromModelFile(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = spec.build_model()

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            terms = spec.losses(self.net, batch)
            if plain:
                return sum(spec.weights.get(k, 1.0) * v for k, v in terms.items())
            total = self.lossdiag.combine(terms, dict(spec.weights))
            self.log("total", total)
            return total

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return spec.make_optimizer(self.parameters())

    return FromModelFile()


def lightning_trainer(tmp_path: Path, steps: int, callbacks: list, **options: Any) -> Any:
    import lightning.pytorch as pl

    return pl.Trainer(accelerator="cpu", devices=1, max_steps=steps, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks,
                      default_root_dir=str(tmp_path), **options)


def hf_trainer(spec: ModelSpec, tmp_path: Path, steps: int, lossdiag: Optional[dict] = None,
               plain: bool = False, schedule: str = "constant", own_optimizer: bool = False) -> Any:
    """A Hugging Face Trainer over the model file's module, its batches in order (one batch per item), its losses,
    its validation batches as eval_dataset when it has some; the model file's optimizer, or with `own_optimizer`
    the Trainer's (AdamW)."""
    import transformers

    from lossdiag.integrations.transformers import LossDiagTrainer

    base = transformers.Trainer if plain else LossDiagTrainer

    class FromModelFile(base):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            terms = spec.losses(model, inputs["batch"])
            if plain:
                return sum(spec.weights.get(k, 1.0) * v for k, v in terms.items())
            return self.lossdiag.combine(terms, dict(spec.weights))

        def _get_train_sampler(self, *args: Any, **kwargs: Any) -> torch.utils.data.Sampler:
            return torch.utils.data.SequentialSampler(self.train_dataset)

        def create_optimizer(self, model=None):
            if own_optimizer:
                return super().create_optimizer(model)
            if self.optimizer is None:
                self.optimizer = spec.make_optimizer((model or self.model).parameters())
            return self.optimizer

    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "hf"), max_steps=steps, per_device_train_batch_size=1, per_device_eval_batch_size=1,
        save_strategy="no", use_cpu=True, disable_tqdm=True, seed=0, report_to=[], logging_strategy="no", lr_scheduler_type=schedule,
        remove_unused_columns=False)
    extra = {} if plain else {"lossdiag": lossdiag or {}}
    held_out = [{"batch": b} for b in spec.validation_batches()] if spec.validation_batches else None
    return FromModelFile(model=spec.build_model(), args=args, train_dataset=[{"batch": b} for b in spec.batches()],
                         eval_dataset=held_out, data_collator=lambda rows: rows[0], **extra)
