"""The names records.jsonl and sweep_records.jsonl use, as enums: each kind of record, and a check's status and
failure code. Each member is its own text (a `str`), so a record holding one is written exactly as the name,
and a name read back from a file compares equal to its member."""
from __future__ import annotations

import enum


class TextEnum(str, enum.Enum):
    """An enum whose members are the text they name, in JSON, f-strings and comparisons alike."""

    def __str__(self) -> str:
        return str.__str__(self)

    def __format__(self, spec: str) -> str:
        return str.__format__(str.__str__(self), spec)


class Kind(TextEnum):
    """The kinds of record in records.jsonl (CONTRACT section 3)."""

    META = "meta"
    LAYOUT = "layout"
    STEP = "step"
    NONFINITE_UPDATE = "nonfinite-update"
    END = "end"
    CHECK = "check"
    REFINE = "refine"
    PROGRESS = "progress"
    VERIFY = "verify"


class SweepKind(TextEnum):
    """The kinds of record in sweep_records.jsonl."""

    SWEEP = "sweep"
    POINT = "point"
    ALONE = "alone"
    END = "end"


class CheckStatus(TextEnum):
    """A single-term check's outcome."""

    PASS = "pass"
    FAIL = "fail"
    SKIPPED = "skipped"


class CheckCode(TextEnum):
    """Why a single-term check failed."""

    NOT_DECREASING = "not-decreasing"
    DIVERGING = "diverging"
