"""Which training steps get per-term gradients: every N-th, and denser at the start where the balance moves most."""
from __future__ import annotations

import dataclasses

from lossdiag.errors import SpecError

DEFAULT_EVERY = 100


def _one_or_three_times_a_power_of_ten(step: int) -> bool:
    while step >= 10 and step % 10 == 0:
        step //= 10
    return step in (1, 3)


@dataclasses.dataclass(frozen=True)
class Schedule:
    """Step 0 and every `every`-th step, plus (with `early`) steps 1, 3, 10, 30, 100, ... below `every`.

    The early steps make the start logarithmic (two a decade), like Cockpit's schedules, for a handful of extra
    recorded steps in the whole run; after that the spacing is linear, so the cost stays a fixed fraction.
    """

    every: int = DEFAULT_EVERY
    early: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.every, bool) or not isinstance(self.every, int) or self.every < 1:
            raise SpecError(f"every must be an integer of at least 1, got {self.every!r}")

    def __call__(self, step: int) -> bool:
        if step % self.every == 0:
            return True
        return self.early and step < self.every and _one_or_three_times_a_power_of_ten(step)

    def describe(self) -> dict:
        """Plain data for the records' header."""
        return {"every": self.every, "early": "1, 3, 10, 30, ... below every" if self.early else None}
