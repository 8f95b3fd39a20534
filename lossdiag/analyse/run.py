"""Parse records (from a profile, a Monitor or a file) once into arrays the analysers share."""
from __future__ import annotations

import dataclasses
import functools
import json
import math
from typing import Any, Sequence

import numpy as np

from lossdiag.record.schema import LAYOUT, LAYOUT_FIELDS, valid


def _number(value: Any) -> float:
    try:
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan
    except OverflowError:
        return math.nan


def in_step_order(records: Sequence[dict]) -> tuple[list[dict], list[str]]:
    """Step records sorted by step with repeated steps dropped (the first kept), other records with exact
    repeats dropped; and a note on each repair, for the page and the terminal."""
    steps: dict[int, dict] = {}
    others: list[dict] = []
    seen: set[str] = set()
    repeats = 0
    for record in records:
        if record.get("kind") == "step":
            repeats += record["step"] in steps
            steps.setdefault(record["step"], record)
            continue
        key = json.dumps(record, sort_keys=True, default=str)
        repeats += key in seen
        if key not in seen:
            seen.add(key)
            others.append(record)
    order = [record["step"] for record in records if record.get("kind") == "step"]
    notes = []
    if any(later < earlier for earlier, later in zip(order, order[1:])):
        notes.append("step records were out of order and were sorted by step")
    if repeats:
        notes.append(f"{repeats} repeated record{'s were' if repeats > 1 else ' was'} dropped (a step kept once)")
    return others[:1] + [steps[k] for k in sorted(steps)] + others[1:], notes


def finite_median(values: np.ndarray) -> float:
    """The median of the finite entries, NaN when there are none."""
    finite = values[np.isfinite(values)]
    return float(np.median(finite)) if finite.size else math.nan


@dataclasses.dataclass(frozen=True)
class RunData:
    """One run's records as arrays: losses every step, gradient statistics on recorded steps."""

    meta: dict
    terms: list[str]
    loss_steps: np.ndarray
    losses: np.ndarray
    grad_steps: np.ndarray
    norms: np.ndarray
    norms_all: np.ndarray
    weights: np.ndarray
    gram: np.ndarray
    layers: dict[str, np.ndarray]
    reach: np.ndarray
    nonfinite: list[tuple[int, list[str]]]
    extra: dict[str, list[dict]]
    ended: bool
    torn: bool
    repairs: tuple[str, ...] = ()

    @functools.cached_property
    def shared_terms(self) -> list[str]:
        """Terms whose graph reaches at least one shared parameter on some recorded step."""
        counts = self.meta.get("term_shared_parameters", {})
        return [t for t in self.terms if counts.get(t, 0) > 0]

    @functools.cached_property
    def on_shared(self) -> np.ndarray:
        """Whether each of the shared terms reached a shared parameter on each recorded step (steps x terms);
        False throughout for the other terms."""
        return self.reach & np.isin(self.terms, self.shared_terms)

    @functools.cached_property
    def share_steps(self) -> np.ndarray:
        """The recorded steps each term's medians on shared parameters are taken over (steps x terms): those on
        which it reached them, or every one for a term that reached them on none (its norm there is 0, as for a
        term that leaves the trunk before a proxy scope's layer)."""
        return self.on_shared | ~self.on_shared.any(axis=0)

    @property
    def config(self) -> dict:
        return self.meta.get("config", {})


def parse(records: Sequence[dict], torn: bool = False) -> RunData:
    """Turn a list of records into RunData; the first record must be the run's header, whose description of the
    shared parameters the last 'layout' record replaces (every parameter shared on some recorded step)."""
    records, invalid = valid(records)
    records, repaired = in_step_order(records)
    layouts = [record for record in records[1:] if record.get("kind") == LAYOUT]
    meta = {**records[0], **{key: layouts[-1][key] for key in LAYOUT_FIELDS}} if layouts else records[0]
    terms = list(meta["terms"])
    everywhere = [meta.get("term_shared_parameters", {}).get(t, 0) > 0 for t in terms]
    loss_steps, losses = [], []
    grad_steps, norms, norms_all, weights, grams, reach = [], [], [], [], [], []
    modules = list(meta.get("shared_modules", []))
    layers: dict[str, list[list[float]]] = {m: [] for m in modules}
    nonfinite: list[tuple[int, list[str]]] = []
    extra: dict[str, list[dict]] = {}
    ended = False
    for record in records[1:]:
        kind = record.get("kind")
        if kind == "step":
            loss_steps.append(record["step"])
            losses.append([_number(record["loss"].get(t)) for t in terms])
            if record.get("nonfinite"):
                nonfinite.append((record["step"], list(record["nonfinite"])))
            grad = record.get("grad")
            if grad:
                grad_steps.append(record["step"])
                norms.append([_number(grad["norms"].get(t)) for t in terms])
                norms_all.append([_number(grad["norms_all"].get(t)) for t in terms])
                weights.append([_number(grad["weights"].get(t)) for t in terms])
                grams.append([[_number(v) for v in row] for row in grad["gram"]])
                counts = grad.get("term_shared_parameters")
                reach.append(everywhere if counts is None else [counts.get(t, 0) > 0 for t in terms])
                for m in modules:
                    row = grad.get("layers", {}).get(m, {})
                    layers[m].append([_number(row.get(t)) for t in terms])
        elif kind == "end":
            ended = True
        elif kind == LAYOUT:
            continue
        else:
            extra.setdefault(str(kind), []).append(record)
    count = len(terms)
    reshape = lambda rows, width: np.array(rows, dtype=float).reshape(-1, width)  # noqa: E731
    return RunData(
        meta=meta, terms=terms, loss_steps=np.array(loss_steps, dtype=int), losses=reshape(losses, count),
        grad_steps=np.array(grad_steps, dtype=int), norms=reshape(norms, count),
        norms_all=reshape(norms_all, count), weights=reshape(weights, count),
        gram=np.array(grams, dtype=float).reshape(-1, count, count),
        layers={m: reshape(rows, count) for m, rows in layers.items()},
        reach=np.array(reach, dtype=bool).reshape(-1, count),
        nonfinite=nonfinite, extra=extra, ended=ended, torn=torn, repairs=tuple(invalid + repaired),
    )

