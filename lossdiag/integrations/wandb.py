"""Monitor scalars to Weights & Biases: `Monitor(model, log=to_wandb(run))`."""
from __future__ import annotations

from typing import Any, Optional

from lossdiag.errors import SpecError
from lossdiag.report.scalars import PREFIX, LogFn

STEP = f"{PREFIX}/step"


def to_wandb(run: Optional[Any] = None) -> LogFn:
    """A Monitor `log=` that logs to a W&B run (default: the active `wandb.run`).

    The scalars are plotted against their own axis, `lossdiag/step` (the recorded step), declared with
    `define_metric`, because the monitor hands a step over once its numbers reach the host, a few steps
    later: W&B drops values logged with a `step=` below its current one.
    """
    if run is None:
        import wandb

        run = wandb.run
        if run is None:
            raise SpecError("to_wandb(): no active W&B run; call wandb.init() first or pass the run")
    run.define_metric(STEP)
    run.define_metric(f"{PREFIX}/*", step_metric=STEP)

    def log(scalars: dict[str, float], step: int) -> None:
        run.log({**scalars, STEP: step})

    return log
