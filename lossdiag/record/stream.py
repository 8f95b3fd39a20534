"""records.jsonl: one JSON object a line, streamed to disk as training goes, read back tolerating a torn end."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Iterable

FLUSH_SECONDS = 2.0
RECORDS = "records.jsonl"


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


class RecordWriter:
    """Appends records to a file, flushing to the OS at least every FLUSH_SECONDS and on close."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("w", encoding="utf-8")
        self._last_flush = time.monotonic()

    def write(self, record: dict) -> None:
        self.write_many((record,))

    def write_many(self, records: Iterable[dict]) -> None:
        self._file.write("".join(dumps(r) + "\n" for r in records))
        if time.monotonic() - self._last_flush >= FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        self._file.flush()
        self._last_flush = time.monotonic()

    def close(self) -> None:
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
