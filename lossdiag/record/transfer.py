"""The steps a Monitor recorded and has not written yet, on their way to records.jsonl: the settled ones go to the
host in one transfer per flush, and their records are written once the numbers have landed, in step order."""
from __future__ import annotations

import dataclasses
import math
import threading
import time
from typing import Any, Callable, Optional

import torch

from lossdiag.record.kinds import Kind
from lossdiag.record.scopes import Measurement
from lossdiag.record.shared import layout_record
from lossdiag.record.slots import Slots
from lossdiag.record.stream import FLUSH_SECONDS, Periodic, RecordWriter


@dataclasses.dataclass
class Row:
    """A recorded step (its term values wait in the slots with every other step's) and its measurement; `layout`,
    the scope's description when this step reached a parameter it had not described."""

    step: int
    weights: Optional[dict[str, float]] = None
    measurement: Optional[Measurement] = None
    layout: Optional[dict] = None


@dataclasses.dataclass
class Batch:
    """Rows whose numbers were sent to the host in one transfer; `event` is set while a CUDA copy is in flight."""

    rows: list[Row]
    sizes: list[int]
    host: torch.Tensor
    event: Any = None


class Outbox:
    """The steps since the last flush: their values in `slots` (the Monitor puts them there), the recorded ones'
    rows, and the batches on their way to the host.

    A flush takes the settled steps before `until` (under the Monitor's `lock`) and sends their numbers to the
    host in one transfer, then writes the landed batches' records with `writer` and hands them to `publish`,
    outside that lock, so the training loop never waits for the formatting; one drain runs at a time. Once
    started, a background thread flushes every FLUSH_SECONDS / 2 and writes what has landed. Without a writer
    (ranks other than 0, or before the run's header) nothing is sent.
    """

    def __init__(self, names: list[str], slots: Slots, lock: threading.RLock,
                 publish: Callable[[list[dict]], None]) -> None:
        self.names = names
        self.slots = slots
        self.writer: Optional[RecordWriter] = None
        self.first = 0
        self.until = math.inf
        self.last_flush = time.monotonic()
        self._lock = lock
        self._publish = publish
        self._recorded: list[Row] = []
        self._batches: list[Batch] = []
        self._writing = threading.RLock()
        self._flusher: Optional[Periodic] = None

    def start(self, writer: RecordWriter) -> None:
        """Write with `writer` from now on, and flush in the background."""
        self.writer = writer
        self._flusher = Periodic(self._flush_background, FLUSH_SECONDS / 4, "lossdiag-monitor-flush")

    def stop(self) -> None:
        """Stop the background flushes (the last one finished)."""
        if self._flusher is not None:
            self._flusher.stop()

    def keep(self, row: Row) -> None:
        """Keep a recorded step's row (its values are in the slots)."""
        self._recorded.append(row)

    def flush(self, force: bool, wait: bool) -> None:
        """Take the settled steps and write what has landed; without `wait`, a CUDA transfer is written by a later
        flush once it has landed, so no step waits for the device."""
        with self._lock:
            self.take(force)
            self.last_flush = time.monotonic()
        self.drain(wait)

    def _flush_background(self) -> None:
        """On the flusher thread: flush once FLUSH_SECONDS / 2 have passed without one, so a loop paused for
        validation or a checkpoint loses none of its steps when killed, and write what has landed. It draws no
        random number, and waits for a device copy on its own thread, never on the training loop's."""
        with self._lock:
            if time.monotonic() - self.last_flush >= FLUSH_SECONDS / 2:
                self.take(force=False)
                self.last_flush = time.monotonic()
        self.drain(wait=True)

    def take(self, force: bool) -> None:
        """Send the numbers of the steps before `until` whose measurements have settled (with `force`, every one
        gives up waiting) to the host in one transfer; without a writer they are dropped."""
        end = min(self.first + self.slots.used, self.until)
        for row in self._recorded:
            if row.step >= end:
                break
            if row.measurement is not None and not row.measurement.settle(force):
                end = row.step
                break
        count = int(end - self.first)
        if count <= 0:
            return
        end = self.first + count
        recorded = {row.step: row for row in self._recorded if row.step < end}
        rows = [recorded.get(step) or Row(step) for step in range(self.first, end)]
        self._recorded = self._recorded[len(recorded):]
        self.first = end
        values = self.slots.take(count)
        if self.writer is not None:
            self._batches.append(send(rows, values))

    def drain(self, wait: bool) -> None:
        """Write the batches whose numbers have reached the host (all of them, with `wait`), in step order, and
        hand their records to `publish` in the same order."""
        written: list[dict] = []
        with self._writing:
            while self._batches:
                batch = self._batches[0]
                if batch.event is not None and not wait and not batch.event.query():
                    break
                if batch.event is not None:
                    batch.event.synchronize()
                written.extend(step_records(self.names, batch.rows, batch.sizes, batch.host.tolist()))
                self._batches.pop(0)
            if written:
                self.writer.write_many(written)
                self.writer.flush()
                self._publish(written)


def send(rows: list[Row], values: torch.Tensor) -> Batch:
    """Join the rows' values and measurements into one float64 tensor and start its copy to the host."""
    extras = [row.measurement.device_values() if row.measurement is not None else None for row in rows]
    flat = torch.cat([values.double(), *[extra.to(values.device) for extra in extras if extra is not None]])
    sizes = [0 if extra is None else extra.numel() for extra in extras]
    if flat.device.type != "cuda":
        return Batch(rows, sizes, flat.cpu())
    event = torch.cuda.Event()
    host = flat.to("cpu", non_blocking=True)
    event.record()
    return Batch(rows, sizes, host, event)


def step_records(names: list[str], rows: list[Row], sizes: list[int], host: list[float]) -> list[dict]:
    """The 'step' records of a batch, from its numbers on the host: term values first, then measurements."""
    count = len(names)
    offset = len(rows) * count
    records = []
    for i, (row, size) in enumerate(zip(rows, sizes)):
        if row.layout is not None:
            records.append(layout_record(row.step, row.layout))
        loss = dict(zip(names, host[i * count:(i + 1) * count]))
        record: dict = {"kind": Kind.STEP, "step": row.step, "loss": loss}
        bad_gradient: list[str] = []
        if row.measurement is not None:
            grad, bad_gradient = row.measurement.result(host[offset:offset + size])
            offset += size
            if grad is not None:
                record["grad"] = {"weights": row.weights, **grad}
        bad = [name for name in names if not math.isfinite(loss[name]) or name in bad_gradient]
        if bad:
            record["nonfinite"] = bad
        records.append(record)
    return records
