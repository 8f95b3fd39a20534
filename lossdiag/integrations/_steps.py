"""Where the framework was at each step a Monitor will record, kept until that step's scalars are published."""
from __future__ import annotations

from typing import Any, Optional

from lossdiag.monitor import Monitor


class StepMap:
    """Monitor steps (calls to combine) to where the framework logs them (its global step, and its epoch)."""

    def __init__(self) -> None:
        self._steps: dict[int, Any] = {}

    def mark(self, monitor: Optional[Monitor], where: Any) -> None:
        """Before a batch: if the monitor's next call is recorded, it belongs to `where`."""
        if monitor is not None and monitor.schedule(monitor.steps):
            self._steps[monitor.steps] = where

    def take(self, step: int, default: Any) -> Any:
        """Where a recorded monitor step belongs (`default` if unmarked); forgets it and earlier ones."""
        where = self._steps.get(step, default)
        self._steps = {s: w for s, w in self._steps.items() if s > step}
        return where
