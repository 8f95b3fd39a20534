"""The evaluation batches: each term evaluated on batches fixed at the start, before and after a run.

They are the model file's validation_batches() when it has them (held-out data, `on` = "validation"), else the
first probe_batches batches of batches() under the run's seed (`on` = "probe"). Two runs (a term trained alone, the combined loss, a recommendation under verification, a sweep point) are
compared on the same data, so batch-to-batch noise does not enter the comparison.

Evaluation keeps the model in the mode training uses (BatchNorm on batch statistics, dropout on), because
that is the loss the optimizer sees; dropout draws the same masks every time, from a generator seeded with
the run's seed inside a forked RNG, and every buffer (BatchNorm running statistics, counters) is restored
afterwards, so evaluating changes neither the model nor any random number generator.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Any, Iterator, Mapping, Optional, Sequence

import torch

from lossdiag.train.rng import preserved_rng, seed_everything
from lossdiag.train.spec import ModelSpec, batch_stream, compute_terms, to_device, validation_stream


@dataclasses.dataclass(frozen=True)
class Probe:
    """The evaluation batches, the run's seed, and where they come from: "validation" or "probe"."""

    batches: tuple[Any, ...]
    seed: int
    on: str = "probe"

    def evaluate(self, spec: ModelSpec, model: torch.nn.Module,
                 names: Optional[Sequence[str]] = None) -> dict[str, float]:
        """Each term's mean over the probe batches; the model's buffers and every RNG state are left as they were."""
        return mean_values(self.evaluate_batches(spec, model, names))

    def evaluate_batches(self, spec: ModelSpec, model: torch.nn.Module,
                         names: Optional[Sequence[str]] = None) -> list[dict[str, float]]:
        """Each term's value on each probe batch (the spread across batches is the measure's noise), changing nothing."""
        found: list[dict[str, float]] = []
        with self.untouched(model):
            for batch in self.batches:
                terms = compute_terms(spec, model, batch, list(names) if names is not None else None)
                names = names or list(terms)
                values = torch.stack([t.detach().double() for t in terms.values()]).tolist()
                found.append(dict(zip(terms, values)))
        return found

    @contextlib.contextmanager
    def untouched(self, model: torch.nn.Module) -> Iterator[None]:
        """Evaluate under the probe's seed (the same dropout masks every time), then restore buffers and RNG states."""
        buffers = [(b, b.detach().clone()) for b in model.buffers()]
        try:
            with preserved_rng():
                seed_everything(self.seed)
                yield
        finally:
            with torch.no_grad():
                for buffer, saved in buffers:
                    buffer.copy_(saved)


def mean_values(per_batch: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Each term's mean over batches."""
    return {name: sum(values[name] for values in per_batch) / len(per_batch) for name in (per_batch or [{}])[0]}


def draw_probe(spec: ModelSpec, count: int, seed: int, device: Optional[torch.device] = None) -> Probe:
    """Fix the probe batches: the first `count` batches of a fresh pass under `seed` (RNG states preserved)."""
    with preserved_rng():
        seed_everything(seed)
        stream = batch_stream(spec)
        batches = tuple(to_device(next(stream), device) for _ in range(count))
    return Probe(batches, seed)


MAX_VALIDATION_BATCHES = 64


def validation_probe(spec: ModelSpec, seed: int, device: Optional[torch.device] = None) -> Probe:
    """The batches of one pass of validation_batches() (at most MAX_VALIDATION_BATCHES), under `seed`."""
    with preserved_rng():
        seed_everything(seed)
        found = []
        for batch in validation_stream(spec):
            found.append(to_device(batch, device))
            if len(found) == MAX_VALIDATION_BATCHES:
                break
    return Probe(tuple(found), seed, "validation")


def evaluation_probe(spec: ModelSpec, count: int, seed: int, device: Optional[torch.device] = None) -> Probe:
    """The batches every outcome is measured on: validation_batches() when the model file has it, else the probe."""
    if spec.validation_batches is not None:
        return validation_probe(spec, seed, device)
    return draw_probe(spec, count, seed, device)


def relative_progress(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, Optional[float]]:
    """Each term's relative drop (before - after) / |before|; None where either value is not finite or before is 0."""
    found: dict[str, Optional[float]] = {}
    for name, start in before.items():
        end = after.get(name, math.nan)
        usable = math.isfinite(start) and math.isfinite(end) and start != 0
        found[name] = (start - end) / abs(start) if usable else None
    return found


UNREADABLE_DROP = 10.0


def meaningful_drop(value: Optional[float]) -> Optional[float]:
    """A relative drop where it means something, else None: past UNREADABLE_DROP (1000%) the term started near 0,
    and its losses in units say what happened (the displays write 'from ~0', the summary null)."""
    if value is None or not math.isfinite(value) or abs(value) > UNREADABLE_DROP:
        return None
    return value


def progress_noise(before: Sequence[Mapping[str, float]], after: Sequence[Mapping[str, float]]
                   ) -> dict[str, Optional[float]]:
    """Standard error of each term's relative drop, from the spread of the per-batch drops over the probe batches.

    None where it is undefined (fewer than two batches, a non-finite value, a zero start).
    """
    found: dict[str, Optional[float]] = {}
    for name in (before or [{}])[0]:
        drops = [b[name] - a.get(name, math.nan) for b, a in zip(before, after)]
        start = sum(b[name] for b in before) / len(before)
        usable = len(drops) >= 2 and all(math.isfinite(d) for d in drops) and math.isfinite(start) and start != 0
        if not usable:
            found[name] = None
            continue
        mean = sum(drops) / len(drops)
        variance = sum((d - mean) ** 2 for d in drops) / (len(drops) - 1)
        found[name] = math.sqrt(variance / len(drops)) / abs(start)
    return found
