"""The one yardstick: each term's loss at the end of runs from the same start, paired batch by batch.

Two runs from the same start (same seed, initial state, batch stream, optimizer and steps) are compared on the
same evaluation batches (the model file's validation_batches(), else probe batches drawn from batches()): the
change of a term is (end - reference) / |reference| of its mean end losses (end / reference - 1 for a positive
loss), in the term's own units, and its noise is the standard error of the per-batch differences over the reference's mean. A change is clear only beyond
z = check_noise_z noise; relative drops from the start are a display, never a decision.

What a term pays under a candidate (its cost, the measure the rule's bound applies to) is its end loss's rise over
the larger of its end under the weights in force and FLOOR_FRACTION of its loss at the start: an ordinary term's
relative rise, but a term near its floor (fallen from ~2 to 0.01) is not said to pay +148% for a rise of 0.015
that is small against what it learned.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Optional, Sequence

PerBatch = Sequence[Mapping[str, float]]

FLOOR_FRACTION = 0.1


@dataclasses.dataclass(frozen=True)
class RunEnd:
    """A run from the same start under `weights`: each term's loss on each evaluation batch at the run's end."""

    weights: dict[str, float]
    end: list[dict[str, float]]
    skipped_updates: int = 0

    @property
    def mean(self) -> dict[str, float]:
        """Each term's mean end loss over the evaluation batches."""
        return mean_of(self.end)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Change:
    """One term's end under a run against a reference's: (end - reference) / |reference|, and its noise."""

    change: Optional[float]
    noise: Optional[float]
    end: Optional[float]
    reference: Optional[float]

    def clear(self, z: float) -> int:
        """+1 clearly worse (higher loss), -1 clearly better, 0 within z noise or undefined."""
        if self.change is None or self.noise is None:
            return 0
        if self.change > z * self.noise:
            return 1
        return -1 if self.change < -z * self.noise else 0


@dataclasses.dataclass(frozen=True)
class Cost:
    """What a term pays under a candidate: its rise over the larger of |its end under the weights in force| and
    FLOOR_FRACTION of |its start|, the noise on the same scale, and whether the start set that scale."""

    value: float
    noise: Optional[float]
    floored: bool

    def clear(self, z: float) -> bool:
        """Whether the term clearly pays: a rise beyond z noise."""
        return self.noise is not None and self.value > z * self.noise


def cost(measured: Change, start: Optional[float]) -> Optional[Cost]:
    """`measured` (a candidate's change against the weights in force) as a cost, given the term's mean loss at the
    start (None: unknown, the change itself); None where the change is undefined."""
    if measured.change is None or measured.reference is None:
        return None
    reference = abs(measured.reference)
    floor = FLOOR_FRACTION * abs(start) if start is not None and math.isfinite(start) else 0.0
    factor = reference / max(reference, floor)
    return Cost(measured.change * factor, None if measured.noise is None else measured.noise * factor, floor > reference)


def mean_of(per_batch: PerBatch) -> dict[str, float]:
    """Each term's mean over batches (NaN where a batch lacks it)."""
    if not per_batch:
        return {}
    return {name: sum(_value(b.get(name)) for b in per_batch) / len(per_batch) for name in per_batch[0]}


def _value(value: Optional[float]) -> float:
    """A recorded loss as a float: NaN for a missing or non-finite one (records write those as null)."""
    return math.nan if value is None else float(value)


def _finite_mean(values: Sequence[float]) -> Optional[float]:
    """The mean of the values, None where there are none or one is not finite."""
    return sum(values) / len(values) if values and all(math.isfinite(v) for v in values) else None


def change(end: PerBatch, reference: PerBatch, term: str) -> Change:
    """`term` at the end of a run against a reference run, paired batch by batch on the same evaluation batches.

    Undefined (None) where a value is not finite, the batches differ in number, or the reference mean is 0; the
    mean of either side is still given where all its values are finite (a term that diverged only in the run keeps
    its reference, so the rule can charge the divergence).
    """
    ends = [_value(b.get(term)) for b in end]
    refs = [_value(b.get(term)) for b in reference]
    if not ends or len(ends) != len(refs) or not all(math.isfinite(v) for v in ends + refs):
        return Change(None, None, _finite_mean(ends), _finite_mean(refs) if len(ends) == len(refs) else None)
    mean_end, mean_ref = sum(ends) / len(ends), sum(refs) / len(refs)
    if mean_ref == 0:
        return Change(None, None, mean_end, mean_ref)
    differences = [e - r for e, r in zip(ends, refs)]
    noise = None
    if len(differences) >= 2:
        centre = sum(differences) / len(differences)
        variance = sum((d - centre) ** 2 for d in differences) / (len(differences) - 1)
        noise = math.sqrt(variance / len(differences)) / abs(mean_ref)
    return Change((mean_end - mean_ref) / abs(mean_ref), noise, mean_end, mean_ref)


def changes(end: PerBatch, reference: PerBatch, terms: Sequence[str]) -> dict[str, Change]:
    """`change` for every term."""
    return {term: change(end, reference, term) for term in terms}
