"""Lightning: `Trainer(callbacks=[LossDiagCallback(out=...)])`, and `training_step` returns
`self.lossdiag.combine(terms, weights)`; `find_weights(trainer, model)` verifies the weights from the same state."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import lightning.pytorch as pl
import torch

from lossdiag.api import ProfileResult
from lossdiag.errors import SpecError
from lossdiag.integrations._steps import StepMap
from lossdiag.integrations._verify import Snapshot, TermCapture, chained, find, same_optimizer
from lossdiag.monitor import Monitor
from lossdiag.record.schedule import DEFAULT_EVERY
from lossdiag.train.rng import preserved_rng
from lossdiag.report.scalars import LogFn


class LossDiagCallback(pl.Callback):
    """Attaches a lossdiag.Monitor to the module being fitted, as `pl_module.lossdiag`.

    Each recorded step's scalars (lossdiag/<term>/share, ...) go to the trainer's loggers at the global step
    that batch was trained in, once the monitor brings them to the host (a few steps later, see Monitor).
    The end of fitting, or an exception, closes the monitor: summary.json, report.html and the PNGs in `out`,
    and `summary` holds the summary. `options` are the Monitor's (scope, at, early, config).
    With strategy="ddp" every rank measures the global batch (docs/distributed.md), and only global rank 0
    writes `out` and logs; `summary` is None on the other ranks.
    """

    def __init__(self, out: str | Path = "lossdiag-run", every: int = DEFAULT_EVERY, **options: Any) -> None:
        self.out = out
        self.every = every
        self.options = options
        self.monitor: Optional[Monitor] = None
        self.summary: Optional[dict] = None
        self._global_steps = StepMap()

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._global_steps = StepMap()
        self.monitor = Monitor(pl_module, out=self.out, every=self.every, log=self._log_to(trainer),
                               framework="lightning", **self.options)
        pl_module.lossdiag = self.monitor

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self._global_steps.mark(self.monitor, trainer.global_step)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.monitor is not None:
            self.summary = self.monitor.close()
            self.monitor = None

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if self.monitor is not None:
            self.monitor.__exit__(type(exception), exception, exception.__traceback__)
            self.monitor = None

    def _log_to(self, trainer: pl.Trainer) -> LogFn:
        """Send a recorded step's scalars to every logger of the trainer, at that step's global step."""
        def log(scalars: dict[str, float], step: int) -> None:
            global_step = self._global_steps.take(step, trainer.global_step)
            for logger in trainer.loggers:
                logger.log_metrics(scalars, step=global_step)

        return log


def find_weights(trainer: pl.Trainer, model: pl.LightningModule, datamodule: Optional[pl.LightningDataModule] = None,
                 *, train_dataloaders: Optional[Iterable[Any]] = None, val_dataloaders: Optional[Any] = None,
                 progress: Optional[bool] = None, **options: Any) -> ProfileResult:
    """Verify weights where the module trains, before or between fits, like Lightning's learning-rate finder.

    Snapshots the module, its optimizer (the trainer's, with its state, once fitting has made one; else the one
    configure_optimizers() returns) and every RNG, runs the candidates from that state through `training_step`
    on the fit's training data (the datamodule's, `train_dataloaders`, or the module's own), judges each run by
    each term's loss at its end on the fit's validation data (`val_dataloaders`, the datamodule's or the module's
    val_dataloader(); else probe training batches), and returns lossdiag.profile's result: the same runs,
    yardstick and rule as the CLI. `training_step` must form its total
    with `self.lossdiag.combine(terms, weights)`. `options` are lossdiag.profile's (steps, check_steps, seed, out,
    ...). The module, the trainer and every RNG are left as they were, so a fit after it is the fit without it.
    """
    from lightning.pytorch.core.optimizer import _configure_optimizers

    batches = _train_batches(model, datamodule, train_dataloaders)
    evaluation = _validation_batches(model, datamodule, val_dataloaders)

    def step(module: torch.nn.Module, batch: Any, capture: TermCapture) -> None:
        module.lossdiag = capture
        module.training_step(batch, capture.steps)

    def make_optimizer(module: torch.nn.Module) -> torch.optim.Optimizer:
        if trainer.optimizers:
            if len(trainer.optimizers) > 1:
                raise SpecError("find_weights: the module has several optimizers; it verifies one optimizer's training")
            return same_optimizer(trainer.optimizers[0], model, module)
        optimizers, _, _ = _configure_optimizers(module.configure_optimizers())
        if len(optimizers) != 1:
            raise SpecError(f"find_weights: configure_optimizers() returned {len(optimizers)} optimizers; "
                            f"it verifies one optimizer's training")
        return optimizers[0]

    if not model.automatic_optimization:
        raise SpecError("find_weights: the module uses manual optimization; it runs automatic optimization only")
    snapshot = Snapshot(f"{type(model).__name__}.training_step", model, batches, step, make_optimizer, evaluation)
    return find(snapshot, options, progress)


def _train_batches(model: pl.LightningModule, datamodule: Optional[pl.LightningDataModule],
                   train_dataloaders: Optional[Iterable[Any]]) -> Callable[[], Iterable[Any]]:
    """The fit's training data: `train_dataloaders`, else the datamodule's (set up for fitting), else the module's."""
    from lightning.pytorch.utilities.model_helpers import is_overridden

    if train_dataloaders is not None:
        return lambda: train_dataloaders
    if datamodule is not None:
        with preserved_rng():
            datamodule.prepare_data()
            datamodule.setup("fit")
        return datamodule.train_dataloader
    if is_overridden("train_dataloader", model):
        return model.train_dataloader
    raise SpecError("find_weights: no training data: pass datamodule= or train_dataloaders=, or define the module's "
                    "train_dataloader()")


def _validation_batches(model: pl.LightningModule, datamodule: Optional[pl.LightningDataModule],
                        val_dataloaders: Optional[Any]) -> Optional[Callable[[], Iterable[Any]]]:
    """The fit's validation data (`val_dataloaders`, else the datamodule's, else the module's), or None."""
    from lightning.pytorch.utilities.model_helpers import is_overridden

    if val_dataloaders is not None:
        return lambda: chained(val_dataloaders)
    for owner in (datamodule, model):
        if owner is not None and is_overridden("val_dataloader", owner):
            return lambda: chained(owner.val_dataloader())
    return None
