"""Write a run's outputs into a folder, each file atomically so none is ever half-written."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Sequence

from lossdiag.record.stream import dumps


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write a file through a temporary neighbour and a rename, with the permissions a plain open() gives."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def summary_json(summary: dict) -> str:
    """summary.json's text: indented, valid JSON (non-finite floats are already null)."""
    return json.dumps(summary, indent=2, allow_nan=False) + "\n"


def write_records(path: Path, records: Sequence[dict]) -> None:
    """Write a whole run's records at once (a run streamed elsewhere, or one held in memory)."""
    write_atomic(path, "".join(dumps(r) + "\n" for r in records))
