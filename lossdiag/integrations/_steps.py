"""The framework's step for each step a Monitor will record, kept until that step's scalars are published."""
from __future__ import annotations

from typing import Optional

from lossdiag.monitor import Monitor


class StepMap:
    """Monitor steps (calls to combine) to the step a framework logs them at (its global step)."""

    def __init__(self) -> None:
        self._steps: dict[int, int] = {}

    def mark(self, monitor: Optional[Monitor], framework_step: int) -> None:
        """Before a batch: if the monitor's next call is recorded, it belongs to `framework_step`."""
        if monitor is not None and monitor.schedule(monitor.steps):
            self._steps[monitor.steps] = framework_step

    def take(self, step: int, default: int) -> int:
        """The framework step of a recorded monitor step (`default` if unmarked); forgets it and earlier ones."""
        framework_step = self._steps.get(step, default)
        self._steps = {s: f for s, f in self._steps.items() if s > step}
        return framework_step
