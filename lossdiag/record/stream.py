"""records.jsonl: one JSON object a line, streamed to disk as training goes, read back tolerating a torn end."""
from __future__ import annotations

import json
import math
import threading
import weakref
from pathlib import Path
from typing import Any, Callable, Iterable

FLUSH_SECONDS = 2.0
RECORDS = "records.jsonl"
SWEEP_RECORDS = "sweep_records.jsonl"


def finite_or_none(value: Any) -> Any:
    """Replace NaN and infinities by None, recursively, so the JSON stays valid."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite_or_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(item) for item in value]
    return value


def dumps(record: dict) -> str:
    """One record as a JSON line, non-finite floats written as null."""
    return json.dumps(finite_or_none(record), allow_nan=False, separators=(",", ":"))


class Periodic:
    """Calls a bound method every `seconds` on a daemon thread until stop(), or until its object is collected
    (the method is held weakly, so an object never closed does not live forever)."""

    def __init__(self, method: Callable[[], None], seconds: float, name: str) -> None:
        self._method = weakref.WeakMethod(method)
        self._seconds = seconds
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopped.wait(self._seconds):
            method = self._method()
            if method is None:
                return
            try:
                method()
            except Exception:  # noqa: BLE001 - the owner's own calls report a failing disk; this thread just ends
                return
            finally:
                del method

    def stop(self) -> None:
        self._stopped.set()
        if threading.current_thread() is not self._thread:
            self._thread.join()


class RecordWriter:
    """Appends records to a file; a background thread flushes them to the OS every FLUSH_SECONDS / 2, so at most
    FLUSH_SECONDS of records are lost when the process is killed, however long the writer is left idle."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("w", encoding="utf-8")
        self._lock = threading.Lock()
        self._flusher = Periodic(self.flush, FLUSH_SECONDS / 2, "lossdiag-records-flush")

    def write(self, record: dict) -> None:
        self.write_many((record,))

    def write_many(self, records: Iterable[dict]) -> None:
        text = "".join(dumps(r) + "\n" for r in records)
        with self._lock:
            self._file.write(text)

    def flush(self) -> None:
        with self._lock:
            if not self._file.closed:
                self._file.flush()

    def close(self) -> None:
        self._flusher.stop()
        with self._lock:
            if not self._file.closed:
                self._file.flush()
                self._file.close()

    def __enter__(self) -> "RecordWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_records(path: Path) -> tuple[list[dict], bool]:
    """All complete records of a file, and whether a torn (unparseable) last line was skipped.

    A torn line anywhere but at the end means the file is damaged, which is reported as ValueError. Lines that
    parse are returned as they are: lossdiag.record.schema checks their fields when the run is parsed.
    """
    records: list[dict] = []
    torn = False
    lines = Path(path).read_text(encoding="utf-8", errors="replace").split("\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            if any(rest.strip() for rest in lines[number:]):
                raise ValueError(f"{path}: line {number} is not valid JSON") from None
            torn = True
            continue
        records.append(record)
    return records, torn
