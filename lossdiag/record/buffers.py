"""Buffers (BatchNorm's running statistics) kept as training would leave them while extra backward passes run:
activation checkpointing re-runs the forward inside every backward pass that goes through it."""
from __future__ import annotations

import torch


class BufferGuard:
    """Watches the model's buffers across the measurement's backward passes.

    `settle()` after each pass puts back every buffer the pass changed, so a Monitor's passes leave no trace for
    the user's own backward; with `keep_first` (the profile, whose passes replace the training backward) a
    buffer keeps its first change, as the one backward of the total would have made it. Values are compared,
    not version counters (BatchNorm's kernel updates its statistics without bumping them), and written back
    through `.data`, so that the graph's saved tensors stay valid.
    """

    def __init__(self, model: torch.nn.Module, keep_first: bool = False) -> None:
        self._buffers = list(model.buffers())
        self._saved = [b.clone() for b in self._buffers]
        self._kept = [False] * len(self._buffers)
        self._keep_first = keep_first

    def settle(self) -> None:
        """Undo what the last pass changed in the buffers (keeping a first change with keep_first)."""
        for j, buffer in enumerate(self._buffers):
            if torch.equal(buffer, self._saved[j]):
                continue
            if self._keep_first and not self._kept[j]:
                self._saved[j] = buffer.clone()
                self._kept[j] = True
            else:
                buffer.data.copy_(self._saved[j])
