"""lossdiag.Monitor (CONTRACT section 3): two lines in an existing training loop, neutral and nearly free."""
from __future__ import annotations

import dataclasses
import math
import numbers
import threading
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional

import torch

from lossdiag.config import Config, check_known_terms, read_yaml, resolve
from lossdiag.advise.diagnose import Diagnosis, diagnose
from lossdiag.errors import SpecError
from lossdiag.record.schedule import DEFAULT_EVERY, Schedule
from lossdiag.record.proxies import make_scope
from lossdiag.record.scopes import ALL, Measurement
from lossdiag.record.shared import UNMEASURABLE, discover, layout_record
from lossdiag.record.schema import run_header
from lossdiag.record.stream import FLUSH_SECONDS, RECORDS, Periodic, RecordWriter, read_records
from lossdiag.report.outputs import write_outputs
from lossdiag.report.scalars import LogFn, step_scalars
from lossdiag.train.spec import check_scalar_terms
from lossdiag.report.summary import build_summary

if TYPE_CHECKING:
    from lossdiag.record.distributed import Ranks

SOURCE = "monitor"


@dataclasses.dataclass
class _Row:
    """One step waiting for the host (its term values wait in the monitor's slots) and its measurement; `layout`,
    the scope's description when this step reached a parameter it had not described."""

    step: int
    weights: Optional[dict[str, float]] = None
    measurement: Optional[Measurement] = None
    layout: Optional[dict] = None


class _Slots:
    """Pre-allocated room, on the terms' device, for the values of the steps not yet sent to the host.

    Copying each step's values into it keeps no tensor alive per step: small tensors held between steps
    fragment the CPU heap around the activations and inflate the resident memory of a long loop.
    """

    def __init__(self, count: int, capacity: int = 1024) -> None:
        self.count = count
        self.capacity = capacity
        self.used = 0
        self._new = 0
        self._buffer: Optional[torch.Tensor] = None

    @property
    def full(self) -> bool:
        return self.used == self.capacity

    def put(self, values: list[torch.Tensor]) -> None:
        """Copy one step's detached values into the next row (asynchronous on a GPU)."""
        if self._buffer is None:
            self._buffer = torch.empty(self.capacity, self.count, dtype=torch.float64, device=values[0].device)
        row = self._buffer[self.used]
        for k, value in enumerate(values):
            row[k].copy_(value.detach())
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


@dataclasses.dataclass
class _Batch:
    """Rows whose numbers were sent to the host in one transfer; `event` is set while a CUDA copy is in flight."""

    rows: list[_Row]
    sizes: list[int]
    host: torch.Tensor
    event: Any = None


class Monitor:
    """Records the loss terms of an existing training loop: values every step, per-term gradients on a schedule.

    Attaching it changes nothing about training: it never writes `.grad`, never runs a forward pass, draws no
    random number and holds no graph between steps. Records stream to `out/records.jsonl`; `close()` writes
    summary.json, report.html and the PNGs. Gradients are taken every `every` steps, plus steps 1, 3, 10, 30, ...
    below `every` when `early`. scope='all' (exact) measures every shared parameter; 'last-layer' and
    'representation' (with at=, the module whose output every term uses) are cheaper proxies, labelled as such
    in the report. `config` holds thresholds: a mapping of options or a YAML file's path; `target_shares` the
    share of the shared gradient each term should hold (CONTRACT section 1).

    Under torchrun (CONTRACT section 8) the model may be wrapped in DistributedDataParallel before or after; on a
    recorded step the terms' gradients and the loss values since the previous one are averaged over the ranks,
    rank 0 writes, and close() is a collective: every rank calls it.

    `log(scalars, step)`, when given, receives each recorded step's logger scalars (lossdiag.report.scalars) with that
    step's number, once its numbers are on the host: when the monitor writes the step's record (at the batched
    transfer every ~2 s, on summary() and on close()), so logging adds no transfer and no wait on the device.
    Under torchrun only rank 0 calls it.

    The Monitor cannot rerun the loop from its start, so it verifies no weights: its summary reports the candidate
    (`candidate_weights`) and the call that verifies it where the loop runs; `framework` ('lightning',
    'transformers', set by the integrations) names that call, lossdiag.profile(...) by default.
    """

    def __init__(self, model: torch.nn.Module, out: str | Path = "lossdiag-run", every: int = DEFAULT_EVERY, *,
                 scope: str = ALL, at: torch.nn.Module | str | None = None, early: bool = True,
                 config: Config | Mapping[str, Any] | str | Path | None = None, log: Optional[LogFn] = None,
                 target_shares: Optional[Mapping[str, float]] = None, framework: Optional[str] = None) -> None:
        if not isinstance(model, torch.nn.Module):
            raise SpecError(f"Monitor: model must be a torch.nn.Module, got {type(model).__name__}")
        if log is not None and not callable(log):
            raise SpecError(f"Monitor: log must be a function log(scalars, step), got {type(log).__name__}")
        from lossdiag.record import distributed

        self.model = distributed.unwrap(model)
        self.out = Path(out)
        if self.out.exists() and not self.out.is_dir():
            raise SpecError(f"Monitor: out={str(out)!r} is a file, not a folder; give the folder to write the "
                            f"records and the report into")
        self.schedule = Schedule(every, bool(early))
        self.config = dataclasses.replace(_base_config(config), every=every, out=str(self.out))
        if target_shares is not None:
            self.config = resolve({"target_shares": target_shares}, self.config, source="Monitor(target_shares=...)")
        self._scope = make_scope(scope, self.model, at)
        self._ranks: Optional["Ranks"] = None
        self._writes = True
        self._ready_until = math.inf
        self._names: Optional[list[str]] = None
        self._step = 0
        self._rows: list[_Row] = []
        self._slots: Optional[_Slots] = None
        self._batches: list[_Batch] = []
        self._writer: Optional[RecordWriter] = None
        self._last_flush = time.monotonic()
        self._lock = threading.RLock()
        self._flusher: Optional[Periodic] = None
        self._closed = False
        self._summary: Optional[dict] = None
        self._log = log
        self._shared_terms: list[str] = []
        self._framework = framework

    @property
    def steps(self) -> int:
        """Calls to combine() or record() so far."""
        return self._step

    def combine(self, terms: Mapping[str, torch.Tensor],
                weights: Optional[Mapping[str, Any]] = None) -> torch.Tensor:
        """Record the step and return sum(weights[k] * terms[k]) in the mapping's order (missing weights are 1)."""
        with self._lock:
            self._observe(terms, weights)
        total = None
        for name, value in terms.items():
            part = weights[name] * value if weights is not None and name in weights else value
            total = part if total is None else total + part
        return total

    def record(self, terms: Mapping[str, torch.Tensor], weights: Optional[Mapping[str, Any]] = None) -> None:
        """Record the step for a loop that keeps its own sum; call it before that sum's backward()."""
        with self._lock:
            self._observe(terms, weights)

    def summary(self) -> Optional[dict]:
        """summary.json's content for the steps so far, as a dict (None on ranks other than 0 under torchrun)."""
        if not self._writes:
            return None
        if self._writer is None:
            raise SpecError("Monitor.summary(): nothing recorded yet; call combine() or record() first")
        with self._lock:
            if not self._closed:
                self._flush(force=False, wait=True)
        return self._diagnose()[1]

    def close(self) -> Optional[dict]:
        """Write the last records, remove every hook, and write summary.json, report.html and the PNGs.

        Returns the summary (None when nothing was recorded, and on ranks other than 0 under torchrun). Closing
        twice does nothing more.
        """
        return self._close(finished=True)

    def __enter__(self) -> "Monitor":
        return self

    def __exit__(self, exc_type: Any, exc: Any, traceback: Any) -> None:
        if exc_type is None:
            self.close()
            return
        try:
            self._close(finished=False)
        except Exception:  # noqa: BLE001 - the loop's own exception is the one to show; the records stay on disk
            return

    def _observe(self, terms: Mapping[str, torch.Tensor], weights: Optional[Mapping[str, Any]]) -> None:
        if self._closed:
            raise SpecError("Monitor is closed: combine() and record() cannot be called after close()")
        check_terms(terms, self._names)
        check_weights(weights, terms)
        if self._names is None:
            check_known_terms(self.config.target_shares or {}, list(terms), "target_shares", "Monitor")
            self._names = list(terms)
            self._bind(terms)
        if self._rows and self._rows[-1].measurement is not None:
            self._rows[-1].measurement.settle(force=True)
        if self._batches:
            self._drain(wait=False)
        if time.monotonic() - self._last_flush >= FLUSH_SECONDS:
            self._flush(force=False, wait=False)
        ordered = {name: terms[name] for name in self._names}
        if self._slots is None:
            unaveraged = 0 if self._ranks is None else 2 * self.schedule.every + 2
            self._slots = _Slots(len(self._names), max(1024, unaveraged))
        elif self._slots.full:
            self._flush(force=True, wait=False)
        self._slots.put(list(ordered.values()))
        row = _Row(self._step)
        recorded = self.schedule(self._step)
        if recorded and self._ranks is not None:
            self._ranks.ride(self._slots.fresh())
        if recorded and any(value.requires_grad for value in ordered.values()):
            row.weights = weight_values(weights, self._names)
            row.measurement = self._measure(ordered, row.weights)
            row.layout = self._scope.grown()
        if recorded and self._ranks is not None:
            self._synchronise(row, next(iter(ordered.values())).device)
        if self._writer is None and self._writes:
            self._start(row.weights or weight_values(weights, self._names))
        self._rows.append(row)
        self._step += 1
        self._scope.arm(self.schedule(self._step))

    def _bind(self, terms: Mapping[str, torch.Tensor]) -> None:
        """Fix the shared parameters from the first call's graphs; under torchrun, join the ranks."""
        from lossdiag.record import distributed

        self._ranks = distributed.ranks(self.model, self._scope)
        if self._ranks is None:
            layout = discover(self.model, terms)
        else:
            layout = self._ranks.discover(self.model, terms)
            self._scope.average = self._ranks.average_grads
            self._writes = self._ranks.writes
        self._scope.bind(layout, terms)

    def _synchronise(self, row: _Row, device: torch.device) -> None:
        """Run this recorded step's collective (if the scope has not) and let the averaged rows reach the host."""
        if row.measurement is not None:
            row.measurement = self._ranks.defer(row.measurement, len(self._names), device)
        self._ranks.sync()
        self._ready_until = row.step + 1

    def _measure(self, terms: dict[str, torch.Tensor], weights: dict[str, float]) -> Measurement:
        try:
            return self._scope.measure(terms, weights)
        except RuntimeError as exc:
            if "use_reentrant" in str(exc) or "Checkpointing is not compatible" in str(exc):
                raise SpecError(f"Monitor: {UNMEASURABLE['CheckpointFunctionBackward']}") from None
            if "second time" not in str(exc):
                raise
            raise SpecError("Monitor: call combine() or record() before loss.backward(); this step's graph was "
                            "already freed when the monitor took the per-term gradients") from None

    def _start(self, weights: dict[str, float]) -> None:
        header = run_header(SOURCE, self._names, weights, self.config, framework=self._framework,
                            scope=self._scope.name, scope_note=self._scope.note(), schedule=self.schedule.describe(),
                            **self._scope.describe())
        self._shared_terms = [t for t, n in header["term_shared_parameters"].items() if n > 0]
        self._writer = RecordWriter(self.out / RECORDS)
        self._writer.write(header)
        self._writer.flush()
        self._flusher = Periodic(self._flush_idle, FLUSH_SECONDS / 4, "lossdiag-monitor-flush")

    def _flush_idle(self) -> None:
        """On the flusher thread: write the settled steps once FLUSH_SECONDS / 2 have passed without a flush, so a
        loop paused for validation or a checkpoint loses none of them when killed. It draws no random number,
        and waits for a device copy on its own thread, never on the training loop's."""
        with self._lock:
            if not self._closed and time.monotonic() - self._last_flush >= FLUSH_SECONDS / 2:
                self._flush(force=False, wait=True)

    def _flush(self, force: bool, wait: bool) -> None:
        """Send the settled rows' numbers to the host in one transfer and write them; without `wait`, a CUDA
        transfer is written by a later call once it has landed, so no step waits for the device."""
        ready = 0
        for row in self._rows:
            if row.step >= self._ready_until or (row.measurement is not None and not row.measurement.settle(force)):
                break
            ready += 1
        rows, self._rows = self._rows[:ready], self._rows[ready:]
        self._last_flush = time.monotonic()
        if rows:
            values = self._slots.take(len(rows))
            if self._writes:
                self._batches.append(_send(rows, values))
        self._drain(wait)

    def _drain(self, wait: bool) -> None:
        """Write the batches whose numbers have reached the host, in step order."""
        written: list[dict] = []
        while self._batches:
            batch = self._batches[0]
            if batch.event is not None and not wait and not batch.event.query():
                break
            if batch.event is not None:
                batch.event.synchronize()
            records = step_records(self._names, batch.rows, batch.sizes, batch.host.tolist())
            self._writer.write_many(records)
            self._batches.pop(0)
            written.extend(records)
        if written:
            self._writer.flush()
            self._publish(written)

    def _publish(self, records: list[dict]) -> None:
        """Hand the recorded steps' scalars to the user's log function, in step order."""
        for record in records:
            if self._log is not None and "grad" in record:
                self._call_log(step_scalars(record, self._shared_terms), record["step"])

    def _call_log(self, scalars: dict[str, float], step: int) -> None:
        """Call the user's log function; the first exception it raises is warned about once and the function is
        not called again, so a broken logger can never stop the training loop."""
        try:
            self._log(scalars, step)
        except Exception as exc:  # noqa: BLE001 - whatever a logger raises must not reach the training loop
            self._log = None
            warnings.warn(f"lossdiag.Monitor: log(scalars, step) raised {type(exc).__name__}: {exc} at step {step}; "
                          f"it will not be called again (the records and the report are unaffected)",
                          RuntimeWarning, stacklevel=2)

    def _close(self, finished: bool) -> Optional[dict]:
        if self._flusher is not None:
            self._flusher.stop()
        if self._closed:
            return self._summary
        self._closed = True
        try:
            if finished and self._ranks is not None:
                self._ranks.ride(self._slots.fresh())
                self._ranks.sync()
                self._ready_until = math.inf
            if self._writer is None:
                return None
            self._flush(force=True, wait=True)
            if finished:
                self._writer.write({"kind": "end", "step": max(self._step - 1, 0), "steps": self._step})
        finally:
            self._scope.close()
            if self._writer is not None:
                self._writer.close()
        diagnosis, self._summary = self._diagnose()
        write_outputs(self.out, diagnosis, self._summary)
        return self._summary

    def _diagnose(self) -> tuple[Diagnosis, dict]:
        records, torn = read_records(self.out / RECORDS)
        diagnosis = diagnose(records, torn)
        return diagnosis, build_summary(diagnosis)


def _base_config(config: Config | Mapping[str, Any] | str | Path | None) -> Config:
    """The thresholds a Monitor diagnoses with: defaults, overlaid by a mapping or a YAML file."""
    if config is None or isinstance(config, Config):
        return config or Config()
    if isinstance(config, (str, Path)):
        return resolve(read_yaml(Path(config)), source=str(config))
    if isinstance(config, Mapping):
        return resolve(config, source="Monitor(config=...)")
    raise SpecError(f"Monitor: config must be a mapping of options or a YAML file's path, got {type(config).__name__}")


def check_terms(terms: Any, names: Optional[list[str]]) -> None:
    """Each term a floating-point scalar tensor, and the same names as on the first call (in any order)."""
    check_scalar_terms(terms, "Monitor: ", "terms")
    if names is not None and (len(terms) != len(names) or any(name not in terms for name in names)):
        missing = [name for name in names if name not in terms]
        new = [name for name in terms if name not in names]
        what = f"term '{missing[0]}' is missing" if missing else f"term '{new[0]}' is new"
        raise SpecError(f"Monitor: {what}; every call must pass the terms of the first call, {names}, "
                        f"got {list(terms)}")


def check_weights(weights: Any, terms: Mapping[str, torch.Tensor]) -> None:
    """Weights are a mapping whose names are all terms; missing terms weigh 1."""
    if weights is None:
        return
    if not isinstance(weights, Mapping):
        raise SpecError(f"Monitor: weights must be a mapping of term name to number, got {type(weights).__name__}")
    check_known_terms(weights, list(terms), "weights", "Monitor")
    for name, weight in weights.items():
        number = isinstance(weight, numbers.Real) and not isinstance(weight, bool)
        if not (number or isinstance(weight, torch.Tensor) and weight.numel() == 1):
            raise SpecError(f"Monitor: weight of '{name}' must be a number or a one-element tensor, "
                            f"got {type(weight).__name__} {weight!r:.40}")


def weight_values(weights: Optional[Mapping[str, Any]], names: list[str]) -> dict[str, float]:
    """Each term's weight as a float, 1.0 where none is given; a non-finite weight is a usage error."""
    values = {name: float(weights[name]) if weights is not None and name in weights else 1.0 for name in names}
    for name, value in values.items():
        if not math.isfinite(value):
            raise SpecError(f"Monitor: weight of '{name}' is {value}; weights must be finite numbers")
    return values


def _send(rows: list[_Row], values: torch.Tensor) -> _Batch:
    """Join the rows' values and measurements into one float64 tensor and start its copy to the host."""
    extras = [row.measurement.device_values() if row.measurement is not None else None for row in rows]
    flat = torch.cat([values.double(), *[extra.to(values.device) for extra in extras if extra is not None]])
    sizes = [0 if extra is None else extra.numel() for extra in extras]
    if flat.device.type != "cuda":
        return _Batch(rows, sizes, flat.cpu())
    event = torch.cuda.Event()
    host = flat.to("cpu", non_blocking=True)
    event.record()
    return _Batch(rows, sizes, host, event)


def step_records(names: list[str], rows: list[_Row], sizes: list[int], host: list[float]) -> list[dict]:
    """The 'step' records of a batch, from its numbers on the host: term values first, then measurements."""
    count = len(names)
    offset = len(rows) * count
    records = []
    for i, (row, size) in enumerate(zip(rows, sizes)):
        if row.layout is not None:
            records.append(layout_record(row.step, row.layout))
        loss = dict(zip(names, host[i * count:(i + 1) * count]))
        record: dict = {"kind": "step", "step": row.step, "loss": loss}
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
