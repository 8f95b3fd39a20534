"""A progress bar on a terminal, silence elsewhere."""
from __future__ import annotations

import sys
from typing import Optional


class Progress:
    """Counts work units; draws a tqdm bar on stderr only when stderr is a terminal and enabled."""

    def __init__(self, total: int, description: str, enabled: Optional[bool] = None) -> None:
        if enabled is None:
            enabled = sys.stderr.isatty()
        self._bar = None
        if enabled:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=description, unit="step", leave=False, file=sys.stderr)

    def describe(self, description: str) -> None:
        if self._bar is not None:
            self._bar.set_description(description)

    def note(self, line: str) -> None:
        """Print a line above the bar (a time estimate), only where the bar is drawn."""
        if self._bar is not None:
            self._bar.write(line, file=sys.stderr)

    def update(self, count: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(count)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
