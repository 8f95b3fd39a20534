"""Train a fresh model from the run's start under given weights, and measure each term's progress on the probe.

The single-term checks (one term at weight 1, the others at 0), the progress under the weights in force, the
verification of a recommendation and each sweep point are all this one run, so their figures compare.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Optional

import torch

from lossdiag.train.probe import Probe, mean_values, progress_noise, relative_progress
from lossdiag.config import Config
from lossdiag.train.loop import finite_gradients, start_training
from lossdiag.train.progress import Progress
from lossdiag.train.spec import ModelSpec, compute_terms, to_device
from lossdiag.train.total import weighted_total


@dataclasses.dataclass(frozen=True)
class WeightedRun:
    """A model trained for `steps` on sum(weights[k] * term_k) from the run's start, and the probe before and after.

    `losses` holds each term's value on its training batch at every step; `skipped_updates` counts the steps
    whose weighted loss or gradient was not finite and so were not applied (as in the profile).
    """

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    weights: dict[str, float]
    steps: int
    losses: list[dict[str, float]]
    skipped_updates: int
    before_batches: list[dict[str, float]]
    after_batches: list[dict[str, float]]
    on: str = "probe"

    @property
    def before(self) -> dict[str, float]:
        """Each term's mean on the probe batches at the start."""
        return mean_values(self.before_batches)

    @property
    def after(self) -> dict[str, float]:
        """Each term's mean on the probe batches after the run."""
        return mean_values(self.after_batches)

    @property
    def progress(self) -> dict[str, Optional[float]]:
        """Each term's relative drop on the probe batches (None where undefined)."""
        return relative_progress(self.before, self.after)

    @property
    def noise(self) -> dict[str, Optional[float]]:
        """The standard error of each term's relative drop, from the spread over the probe batches."""
        return progress_noise(self.before_batches, self.after_batches)


def train_under(spec: ModelSpec, config: Config, initial_state: Optional[dict], weights: Mapping[str, float],
                probe: Probe, steps: int, progress: Optional[Progress] = None) -> WeightedRun:
    """Train a fresh model from `initial_state` (the run's seed, optimizer and batch stream) under `weights`.

    Terms missing from `weights` or weighted 0 are evaluated but not trained; a step whose weighted loss or
    gradient is not finite is not applied. The evaluation batches (`probe`) are evaluated before the first and
    after the last step.
    """
    model, optimizer, stream, device = start_training(spec, config, initial_state)
    parameters = [p for p in model.parameters() if p.requires_grad]
    before = probe.evaluate_batches(spec, model)
    names = list(before[0]) if before else None
    losses: list[dict[str, float]] = []
    skipped = 0
    for step in range(steps):
        terms = compute_terms(spec, model, to_device(next(stream), device), names, f" at step {step} of a run from "
                              f"the start (a check or the verification)")
        names = names or list(terms)
        losses.append(dict(zip(terms, torch.stack([t.detach().double() for t in terms.values()]).tolist())))
        trained = {k: t for k, t in terms.items() if weights.get(k, 0.0) != 0 and t.requires_grad}
        optimizer.zero_grad(set_to_none=True)
        finite = bool(trained) and all(math.isfinite(losses[-1][k]) for k in terms if weights.get(k, 0.0) != 0)
        if finite:
            weighted_total(trained, {k: float(weights[k]) for k in trained}).backward()
            finite = finite_gradients(parameters)
        if finite:
            optimizer.step()
        else:
            skipped += 1
        if progress is not None:
            progress.update()
    after = probe.evaluate_batches(spec, model, names)
    return WeightedRun(model, optimizer, dict(weights), steps, losses, skipped, before, after, probe.on)


def train_alone(spec: ModelSpec, config: Config, initial_state: Optional[dict], term: str, terms: list[str],
                probe: Probe, steps: int, progress: Optional[Progress] = None) -> WeightedRun:
    """`term` trained alone (weight 1, every other term 0) from the run's start: its progress is its 'alone' figure."""
    weights = {name: 1.0 if name == term else 0.0 for name in terms}
    return train_under(spec, config, initial_state, weights, probe, steps, progress)


def run_record(kind: str, step: int, run: WeightedRun, **extra: object) -> dict:
    """A run's figures as a record (kind 'progress' under the weights in force, 'verify' for a candidate): the
    means and progress for display, and each term on each evaluation batch at the start and at the end, which
    the rule compares."""
    return {"kind": kind, "step": step, "weights": run.weights, "steps": run.steps, "before": run.before,
            "after": run.after, "progress": run.progress, "noise": run.noise, "on": run.on,
            "start_batches": run.before_batches, "end_batches": run.after_batches,
            "probe_batches": len(run.before_batches), "skipped_updates": run.skipped_updates, **extra}
