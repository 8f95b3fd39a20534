"""Room for the loss values of the steps a Monitor has not yet written: read at once on the CPU, copied into a
preallocated buffer on an accelerator (and under torchrun), so that no step waits for the device and no tensor per
step stays alive (small tensors held between steps fragment the CPU heap around the activations and inflate the
resident memory of a long loop)."""
from __future__ import annotations

from typing import Optional, Union

import torch

CAPACITY = 1024


class HostSlots:
    """The values of a loop on the CPU, read as Python floats (`.item()` waits for nothing there): a step costs no
    tensor operation."""

    def __init__(self, count: int, capacity: int = CAPACITY) -> None:
        self.count = count
        self.capacity = capacity
        self.used = 0
        self._values: list[float] = []

    @property
    def full(self) -> bool:
        return self.used == self.capacity

    def put(self, values: list[torch.Tensor]) -> None:
        """Keep one step's values."""
        self._values.extend([value.item() for value in values])
        self.used += 1

    def take(self, rows: int) -> torch.Tensor:
        """The first `rows` rows, flattened into a float64 tensor; the rows after them move to the front."""
        size = rows * self.count
        taken = torch.tensor(self._values[:size], dtype=torch.float64)
        del self._values[:size]
        self.used -= rows
        return taken


class DeviceSlots:
    """Pre-allocated room, on the terms' device, for the values of the steps not yet sent to the host."""

    def __init__(self, count: int, capacity: int = CAPACITY) -> None:
        self.count = count
        self.capacity = capacity
        self.used = 0
        self._new = 0
        self._buffer: Optional[torch.Tensor] = None
        self._rows: tuple[torch.Tensor, ...] = ()

    @property
    def full(self) -> bool:
        return self.used == self.capacity

    def put(self, values: list[torch.Tensor]) -> None:
        """Copy one step's values into the next row (asynchronous on a GPU), outside the graph."""
        if self._buffer is None:
            self._buffer = torch.empty(self.capacity, self.count, dtype=torch.float64, device=values[0].device)
            self._rows = self._buffer.unbind(0)
        with torch.no_grad():
            torch._foreach_copy_(self._rows[self.used].unbind(0), values)
        self.used += 1
        self._new += 1

    def fresh(self) -> torch.Tensor:
        """The rows put since the last call, as a view (under DDP they are averaged over the ranks in place)."""
        rows = self._buffer[self.used - self._new:self.used]
        self._new = 0
        return rows

    def take(self, rows: int) -> torch.Tensor:
        """The first `rows` rows, flattened into a new tensor; the rows after them move to the front."""
        taken = self._buffer[:rows].reshape(-1).clone()
        rest = self.used - rows
        if rest:
            self._buffer[:rest] = self._buffer[rows:self.used].clone()
        self.used = rest
        return taken


Slots = Union[HostSlots, DeviceSlots]


def make_slots(values: list[torch.Tensor], averaged_every: Optional[int]) -> Slots:
    """Host slots for one process on the CPU; device slots on an accelerator, and under torchrun (`averaged_every`,
    the schedule's spacing), whose recorded steps average the values since the previous one in place over the
    ranks: room for two spacings there, so that a full buffer never holds values still to be averaged."""
    if averaged_every is None and all(value.device.type == "cpu" for value in values):
        return HostSlots(len(values))
    return DeviceSlots(len(values), CAPACITY if averaged_every is None else max(CAPACITY, 2 * averaged_every + 2))
