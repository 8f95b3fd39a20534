"""What each kind of record may hold, checked field by field before any analyser or renderer sees a record.

records.jsonl may come from anywhere (a crashed run, an edited file, a crafted one). A header (the first
record, kind 'meta') with a field of the wrong type refuses the whole file: nothing can be read without it.
Any other record with a field of the wrong type, or nested deeper than MAX_DEPTH, is dropped and counted.
Fields a kind does not list, and kinds this version does not know, pass as they are: every renderer escapes
what it shows.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Optional, Sequence

from lossdiag._version import __version__
from lossdiag.config import Config
from lossdiag.record.kinds import CheckCode, CheckStatus, Kind, SweepKind

MAX_DEPTH = 8

Rule = Callable[[Any], bool]


def number(value: Any) -> bool:
    """A JSON number, or null (a non-finite value is written as null)."""
    return value is None or isinstance(value, (int, float)) and not isinstance(value, bool)


def real(value: Any) -> bool:
    """A JSON number, not null: what a weight in force must be."""
    return value is not None and number(value)


def count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def text(value: Any) -> bool:
    return isinstance(value, str)


def optional(rule: Rule) -> Rule:
    return lambda value: value is None or rule(value)


def listing(rule: Rule) -> Rule:
    return lambda value: isinstance(value, list) and all(rule(item) for item in value)


def mapping(rule: Rule) -> Rule:
    return lambda value: isinstance(value, dict) and all(isinstance(k, str) and rule(v) for k, v in value.items())


def anything(value: Any) -> bool:
    return True


def terms(value: Any) -> bool:
    return listing(text)(value) and len(value) > 0 and len(set(value)) == len(value)


def shared(value: Any) -> bool:
    return (isinstance(value, dict) and count(value.get("count")) and count(value.get("numel"))
            and listing(text)(value.get("names", [])))


def grad(value: Any) -> bool:
    return (isinstance(value, dict) and all(mapping(number)(value.get(key)) for key in ("norms", "norms_all", "weights"))
            and listing(listing(number))(value.get("gram")) and mapping(mapping(number))(value.get("layers", {}))
            and mapping(count)(value.get("term_shared_parameters", {})))


def batches(value: Any) -> bool:
    """Each term's loss on each evaluation batch (a run's start_batches / end_batches, which the rule compares)."""
    return listing(mapping(number))(value)


def probe(value: Any) -> bool:
    """A sweep's probe settings, with the terms' losses on its evaluation batches at the start when recorded."""
    return isinstance(value, dict) and batches(value.get("start_batches", []))


LAYOUT = Kind.LAYOUT
LAYOUT_FIELDS: dict[str, Rule] = {"shared_parameters": shared, "shared_modules": listing(text),
                                  "term_parameters": mapping(count), "term_shared_parameters": mapping(count)}
"""What the header says about the shared parameters; a 'layout' record says it again when a later step grew it."""

RUN_FIELDS: dict[str, Rule] = {"weights": mapping(real), "steps": count, "before": mapping(number),
                               "after": mapping(number), "progress": mapping(number), "noise": mapping(number),
                               "on": text, "start_batches": batches, "end_batches": batches, "probe_batches": count,
                               "skipped_updates": count, "shares": mapping(number),
                               "applied_shares": mapping(number)}
"""A run from the same start: 'progress' under the weights in force, 'verify' for a candidate."""

FIELDS: dict[str, dict[str, Rule]] = {
    Kind.META: {"terms": terms, "weights": mapping(real), "lossdiag_version": text, "torch_version": text,
             "source": text, "scope": text, "scope_note": optional(text), "config": mapping(anything),
             **LAYOUT_FIELDS, "purpose": text, "note": text, "nonfinite_updates": text, "schedule": mapping(anything)},
    LAYOUT: LAYOUT_FIELDS,
    Kind.STEP: {"loss": mapping(number), "nonfinite": listing(text), "grad": grad},
    Kind.END: {"steps": count},
    Kind.CHECK: {"term": text, "status": lambda value: value in set(CheckStatus),
              "code": lambda value: value is None or value in set(CheckCode),
              "losses": listing(number), "loss_start": number, "loss_end": number, "relative_drop": number,
              "reason": optional(text), "steps": optional(count), "noise": number, "probe_batches": count,
              "nonfinite_steps": optional(count), "start_window": optional(count), "end_window": optional(count),
              "on": text, "start_batches": batches, "end_batches": batches},
    Kind.REFINE: {"weights": mapping(number), "dominance": mapping(number), "suggested": mapping(number)},
    Kind.PROGRESS: RUN_FIELDS,
    Kind.VERIFY: RUN_FIELDS,
}
REQUIRED = {Kind.META: ("terms", "weights"), Kind.STEP: ("loss",), LAYOUT: tuple(LAYOUT_FIELDS),
            Kind.CHECK: ("term", "status"), Kind.REFINE: ("weights", "dominance", "suggested"),
            Kind.PROGRESS: ("weights", "steps", "progress"), Kind.VERIFY: ("weights",)}
SWEEP_FIELDS: dict[str, dict[str, Rule]] = {
    SweepKind.SWEEP: {"terms": terms, "weights": mapping(real), "suggested": mapping(real), "lossdiag_version": text,
              "torch_version": text, "source": text, "suggested_alpha": optional(number),
              "plan": listing(mapping(anything)), "config": mapping(anything), "jobs": optional(count),
              "probe": probe, "start_metrics": optional(mapping(number))},
    SweepKind.POINT: {"weights": mapping(real), "alpha": number, "progress": mapping(number), "final": mapping(number),
              "metrics": optional(mapping(number)), "scaled": optional(text), "factor": number,
              "current": optional(lambda value: isinstance(value, bool)), "seconds": number,
              "end_batches": batches},
    SweepKind.ALONE: {"term": text, "weights": mapping(real), "progress": mapping(number), "final": mapping(number),
              "metrics": optional(mapping(number)), "seconds": number, "end_batches": batches},
    SweepKind.END: {"runs": count},
}
SWEEP_REQUIRED = {SweepKind.SWEEP: ("terms", "weights", "suggested", "plan", "config", "probe"),
                  SweepKind.POINT: ("weights", "progress"), SweepKind.ALONE: ("term", "progress")}


def run_header(source: str, terms: Sequence[str], weights: Mapping[str, float], config: Config, kind: str = Kind.META,
               **fields: Any) -> dict:
    """The first record of a run, a profile's, a Monitor's or a sweep's (kind 'sweep') alike: what was recorded,
    under which weights, and the whole configuration, so that every option, however it was given (in code, YAML,
    on the command line, through an integration), reaches the diagnosis and the summary."""
    import torch

    return {"kind": kind, "step": 0, "lossdiag_version": __version__, "torch_version": torch.__version__,
            "source": source, "terms": list(terms), "weights": dict(weights), "config": config.to_dict(), **fields}


@dataclasses.dataclass(frozen=True)
class CheckRecord:
    """A single-term check as records.jsonl holds it (kind 'check'): the term's training curve alone, its means
    on the evaluation batches at the start and end, the decision (status, failure code, reason) and the batches
    behind it. A skipped check that never ran has no `on`, `start_batches` or `end_batches`."""

    step: int
    term: str
    status: CheckStatus
    code: Optional[CheckCode]
    losses: list
    loss_start: Optional[float]
    loss_end: Optional[float]
    relative_drop: Optional[float]
    reason: Optional[str]
    steps: Optional[int]
    noise: Optional[float]
    probe_batches: int
    nonfinite_steps: Optional[int]
    on: Optional[str] = None
    start_batches: Optional[list] = None
    end_batches: Optional[list] = None

    def to_record(self) -> dict:
        """The record as written, keys in the contract's order."""
        fields = dataclasses.asdict(self)
        ran = {key: fields.pop(key) for key in ("on", "start_batches", "end_batches")}
        return {"kind": Kind.CHECK, **fields, **{key: value for key, value in ran.items() if value is not None}}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> "CheckRecord":
        """A record that passed `fault` as a CheckRecord (fields it lacks at their empty values)."""
        code = record.get("code")
        return cls(record["step"], record["term"], CheckStatus(record["status"]),
                   CheckCode(code) if code is not None else None, list(record.get("losses") or []),
                   record.get("loss_start"), record.get("loss_end"), record.get("relative_drop"),
                   record.get("reason"), record.get("steps"), record.get("noise"), record.get("probe_batches", 0),
                   record.get("nonfinite_steps"), record.get("on"), record.get("start_batches"),
                   record.get("end_batches"))


def _too_deep(value: Any) -> bool:
    level, depth = [value], 0
    while level:
        depth += 1
        if depth > MAX_DEPTH:
            return True
        level = [child for item in level if isinstance(item, (dict, list))
                 for child in (item.values() if isinstance(item, dict) else item)]
    return False


def fault(record: Any, names: Optional[Sequence[str]] = None, fields: Mapping[str, Mapping[str, Rule]] = FIELDS,
          required: Mapping[str, Sequence[str]] = REQUIRED) -> Optional[str]:
    """Why a record cannot be used ('its "loss" has the wrong type'), or None when it can.

    `names` (the header's terms) also fixes the shape of a step's Gram matrix; `fields` and `required` are the
    rules of the file's kinds (a profile's by default, SWEEP_FIELDS for sweep_records.jsonl).
    """
    if not isinstance(record, Mapping):
        return "it is not an object"
    step, kind = record.get("step"), record.get("kind")
    if not count(step):
        return "its 'step' is not an integer of 0 or more"
    if not text(kind):
        return "its 'kind' is not a string"
    if _too_deep(record):
        return f"it nests deeper than {MAX_DEPTH} levels"
    rules = fields.get(kind, {})
    missing = [key for key in required.get(kind, ()) if key not in record]
    if missing:
        return f"it has no '{missing[0]}'"
    wrong = [key for key, rule in rules.items() if key in record and not rule(record[key])]
    if wrong:
        return f"its '{wrong[0]}' has the wrong type"
    if kind == Kind.CHECK and (record["status"] == CheckStatus.FAIL) != (record.get("code") is not None):
        return "its 'code' does not match its 'status'"
    if kind == Kind.PROGRESS and "end_batches" in record and "start_batches" not in record:
        return "it has 'end_batches' but no 'start_batches'"
    gram = record.get("grad", {}).get("gram") if kind == Kind.STEP and "grad" in record else None
    if gram is not None and names is not None and any(len(row) != len(names) for row in [*gram, gram]):
        return f"its 'grad.gram' is not {len(names)} x {len(names)}"
    return None


def valid(records: Sequence[Any], header_kind: str = Kind.META, fields: Mapping[str, Mapping[str, Rule]] = FIELDS,
          required: Mapping[str, Sequence[str]] = REQUIRED) -> tuple[list[dict], list[str]]:
    """The usable records (the header first) and a note on each kind of damage dropped.

    Raises ValueError naming the problem when the header itself is unusable. A sweep's records pass
    header_kind='sweep' with SWEEP_FIELDS and SWEEP_REQUIRED.
    """
    if not records:
        raise ValueError("there are no records")
    header = records[0]
    problem = fault(header, None, fields, required)
    if problem is None and header.get("kind") != header_kind:
        problem = f"it is not a header (kind '{header_kind}')"
    if problem is None:
        problem = next((f"it has no '{key}'" for key in required[header_kind] if key not in header), None)
    if problem is not None:
        raise ValueError(f"the first record cannot be read: {problem}")
    names = header["terms"]
    kept, dropped = [header], []
    for record in records[1:]:
        problem = fault(record, names, fields, required)
        if problem is None:
            kept.append(record)
        else:
            dropped.append(problem)
    notes = []
    if dropped:
        notes.append(f"{len(dropped)} record{'s' if len(dropped) > 1 else ''} with a field of the wrong type "
                     f"{'were' if len(dropped) > 1 else 'was'} dropped (the first: {dropped[0]})")
    return kept, notes
