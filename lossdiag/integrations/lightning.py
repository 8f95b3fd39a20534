"""Lightning: `Trainer(callbacks=[LossDiagCallback(out=...)])`, and `training_step` returns
`self.lossdiag.combine(terms, weights)`."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import lightning.pytorch as pl

from lossdiag.integrations._steps import StepMap
from lossdiag.monitor import Monitor
from lossdiag.record.schedule import DEFAULT_EVERY
from lossdiag.scalars import LogFn


class LossDiagCallback(pl.Callback):
    """Attaches a lossdiag.Monitor to the module being fitted, as `pl_module.lossdiag`.

    Each recorded step's scalars (lossdiag/<term>/share, ...) go to the trainer's loggers at the global step
    that batch was trained in, once the monitor brings them to the host (a few steps later, see Monitor).
    The end of fitting, or an exception, closes the monitor: summary.json, report.html and the PNGs in `out`,
    and `summary` holds the summary. `options` are the Monitor's (scope, at, early, config).
    With strategy="ddp" every rank measures the global batch (CONTRACT section 8), and only global rank 0
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
        self.monitor = Monitor(pl_module, out=self.out, every=self.every, log=self._log_to(trainer), **self.options)
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
