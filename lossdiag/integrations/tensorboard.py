"""Monitor scalars to TensorBoard: `Monitor(model, log=to_tensorboard(SummaryWriter(...)))`."""
from __future__ import annotations

from typing import TYPE_CHECKING

from lossdiag.report.scalars import LogFn

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter


def to_tensorboard(writer: "SummaryWriter") -> LogFn:
    """A Monitor `log=` that adds each scalar to `writer` at the recorded step's own number.

    The writer stays the caller's: it flushes on its own schedule and is closed by whoever opened it.
    """
    def log(scalars: dict[str, float], step: int) -> None:
        for name, value in scalars.items():
            writer.add_scalar(name, value, global_step=step)

    return log
