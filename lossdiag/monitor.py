"""lossdiag.Monitor (CONTRACT section 3): two lines in an existing training loop, neutral and nearly free.

A step it does not record costs a check of its input (record/inputs.py) and a read of its values (record/slots.py);
the records are formatted and written on a background thread (record/transfer.py)."""
from __future__ import annotations

import dataclasses
import math
import threading
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional

import torch

from lossdiag.advise.diagnose import Diagnosis, diagnose
from lossdiag.config import Config, check_known_terms, resolve
from lossdiag.errors import SpecError
from lossdiag.record.inputs import check_terms, check_weights, monitor_config, ordered_values, weight_values
from lossdiag.record.kinds import Kind
from lossdiag.record.proxies import make_scope
from lossdiag.record.schedule import DEFAULT_EVERY, Schedule
from lossdiag.record.schema import run_header
from lossdiag.record.scopes import ALL, Measurement
from lossdiag.record.shared import UNMEASURABLE, discover
from lossdiag.record.slots import make_slots
from lossdiag.record.stream import FLUSH_SECONDS, RECORDS, RecordWriter, read_records
from lossdiag.record.transfer import Outbox, Row
from lossdiag.report.outputs import write_outputs
from lossdiag.report.scalars import LogFn, step_scalars
from lossdiag.report.summary import build_summary

if TYPE_CHECKING:
    from lossdiag.record.distributed import Ranks

SOURCE = "monitor"


class Monitor:
    """Records the loss terms of an existing training loop: values every step, per-term gradients on a schedule.

    Attaching it changes nothing about training: it never writes `.grad`, never runs a forward pass, draws no
    random number and holds no graph between steps. Records stream to `out/records.jsonl`; `close()` writes
    summary.json, report.html and the PNGs. Gradients are taken every `every` steps, plus steps 1, 3, 10, 30, ...
    below `every` when `early`. scope='all' (exact) measures every shared parameter; 'last-layer' and
    'representation' (with at=, the module whose output every term uses) are cheaper proxies, labelled as such
    in the report. `config` holds thresholds: a mapping of options or a YAML file's path; `target_shares` the
    share of the shared gradient each term should hold (as `target_shares` in a model file: docs/model-file.md).

    Under torchrun (docs/distributed.md) the model may be wrapped in DistributedDataParallel before or after; on a
    recorded step the terms' gradients and the loss values since the previous one are averaged over the ranks,
    rank 0 writes, and close() is a collective: every rank calls it.

    `log(scalars, step)`, when given, receives each recorded step's logger scalars (lossdiag.report.scalars) with
    that step's number, once its numbers are on the host: when the monitor writes the step's record (at the batched
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
        self.config = dataclasses.replace(monitor_config(config), every=every, out=str(self.out))
        if target_shares is not None:
            self.config = resolve({"target_shares": target_shares}, self.config, source="Monitor(target_shares=...)")
        self._scope = make_scope(scope, self.model, at)
        self._ranks: Optional["Ranks"] = None
        self._writes = True
        self._names: Optional[list[str]] = None
        self._known: frozenset[str] = frozenset()
        self._step = 0
        self._recorded_now = self.schedule(0)
        self._unsettled: Optional[Measurement] = None
        self._outbox: Optional[Outbox] = None
        self._writer: Optional[RecordWriter] = None
        self._lock = threading.RLock()
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
        if not self._closed:
            self._outbox.flush(force=False, wait=True)
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
        """One call: check it, keep its values, and measure it when the schedule records it. A step the schedule
        skips does nothing more unless the slots are full or no flush ran for FLUSH_SECONDS."""
        if self._closed:
            raise SpecError("Monitor is closed: combine() and record() cannot be called after close()")
        if self._names is None:
            self._first_call(terms, weights)
        values = ordered_values(terms, weights, self._names, self._known)
        if self._unsettled is not None:
            self._unsettled.settle(force=True)
            self._unsettled = None
        outbox = self._outbox
        if outbox.slots.full:
            outbox.take(force=True)
        elif time.monotonic() - outbox.last_flush >= FLUSH_SECONDS:
            outbox.flush(force=False, wait=False)
        outbox.slots.put(values)
        recorded = self._recorded_now
        if recorded:
            outbox.keep(self._measure_step(values, weights))
        if self._writer is None and self._writes:
            self._start(weight_values(weights, self._names))
        self._step += 1
        self._recorded_now = self.schedule(self._step)
        if recorded or self._recorded_now:
            self._scope.arm(self._recorded_now)

    def _first_call(self, terms: Mapping[str, torch.Tensor], weights: Optional[Mapping[str, Any]]) -> None:
        """Fix the terms' names and the shared parameters from the first call's graphs; under torchrun, join the
        ranks."""
        from lossdiag.record import distributed

        check_terms(terms, None)
        check_weights(weights, terms)
        check_known_terms(self.config.target_shares or {}, list(terms), "target_shares", "Monitor")
        self._ranks = distributed.ranks(self.model, self._scope)
        if self._ranks is None:
            layout = discover(self.model, terms)
        else:
            layout = self._ranks.discover(self.model, terms)
            self._scope.average = self._ranks.average_grads
            self._writes = self._ranks.writes
        self._scope.bind(layout, terms)
        self._names = list(terms)
        self._known = frozenset(terms)
        averaged_every = None if self._ranks is None else self.schedule.every
        self._outbox = Outbox(self._names, make_slots(list(terms.values()), averaged_every), self._lock, self._publish)

    def _measure_step(self, values: list[torch.Tensor], weights: Optional[Mapping[str, Any]]) -> Row:
        """A recorded step's row: its per-term gradients when its terms have a graph; under torchrun, the values
        since the previous recorded step averaged over the ranks with them."""
        row = Row(self._step)
        if self._ranks is not None:
            self._ranks.ride(self._outbox.slots.fresh())
        if any(value.requires_grad for value in values):
            row.weights = weight_values(weights, self._names)
            row.measurement = self._unsettled = self._measure(dict(zip(self._names, values)), row.weights)
            row.layout = self._scope.grown()
        if self._ranks is not None:
            self._synchronise(row, values[0].device)
        return row

    def _synchronise(self, row: Row, device: torch.device) -> None:
        """Run this recorded step's collective (if the scope has not) and let the averaged rows reach the host."""
        if row.measurement is not None:
            row.measurement = self._unsettled = self._ranks.defer(row.measurement, len(self._names), device)
        self._ranks.sync()
        self._outbox.until = row.step + 1

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
        self._outbox.start(self._writer)

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
        if self._outbox is not None:
            self._outbox.stop()
        if self._closed:
            return self._summary
        self._closed = True
        try:
            if finished and self._ranks is not None:
                self._ranks.ride(self._outbox.slots.fresh())
                self._ranks.sync()
                self._outbox.until = math.inf
            if self._writer is None:
                return None
            self._outbox.flush(force=True, wait=True)
            if finished:
                self._writer.write({"kind": Kind.END, "step": max(self._step - 1, 0), "steps": self._step})
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
