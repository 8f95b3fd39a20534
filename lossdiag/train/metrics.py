"""The user's held-out metrics: validate(model) called as the user would evaluate, and its answer checked.

The model is put in eval mode (dropout off, BatchNorm on its running statistics) under torch.no_grad() and
a seeded, preserved RNG, then given back in the mode it was in.
"""
from __future__ import annotations

import numbers
from typing import Any, Mapping, Optional, Sequence

import torch

from lossdiag.train.rng import preserved_rng, seed_everything
from lossdiag.train.spec import ModelSpec, call_user

CALL = "validate(model)"


def _number(spec: ModelSpec, name: str, value: Any) -> float:
    """A metric's value as a float; anything but a real number (or a one-element tensor) is a usage error."""
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_complex():
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        shown = f"a tensor of shape {tuple(value.shape)}" if isinstance(value, torch.Tensor) else f"{value!r:.60}"
        raise spec.user_error(f"{CALL} returned {shown} for metric '{name}'; each metric must be a number")
    return float(value)


def evaluate(spec: ModelSpec, model: torch.nn.Module, seed: int, expected: Optional[Sequence[str]] = None,
             metric: Optional[str] = None) -> dict[str, float]:
    """Call validate(model) in eval mode without gradients and return its metrics as floats.

    A validate that raises (named with --metric when one was asked for), returns no mapping, a non-number, or
    other metric names than `expected` (the names of its first call) is a usage error that names the metric.
    """
    training = model.training
    model.eval()
    what = CALL if metric is None else f"{CALL}, asked for --metric '{metric}',"
    try:
        with torch.no_grad(), preserved_rng():
            seed_everything(seed)
            answer = call_user(spec, what, spec.validate, model)
    finally:
        model.train(training)
    if not isinstance(answer, Mapping) or not answer:
        raise spec.user_error(f"{CALL} must return a non-empty mapping of metric name to number, "
                              f"got {answer!r:.60}")
    metrics = {str(name): _number(spec, str(name), value) for name, value in answer.items()}
    if expected is not None and list(metrics) != list(expected):
        raise spec.user_error(f"{CALL} returned the metrics {list(metrics)} after {list(expected)}; "
                              f"it must return the same names every time")
    return metrics


def check_metric(spec: ModelSpec, metric: Optional[str], names: Optional[Sequence[str]]) -> None:
    """--metric must name one of validate's metrics; without validate there is no metric to choose by."""
    if metric is None:
        return
    if names is None:
        raise spec.user_error(f"--metric '{metric}' needs a validate(model) function in the model file "
                              f"(it returns the metrics by name)")
    if metric not in names:
        raise spec.user_error(f"--metric '{metric}' is not among the metrics {CALL} returns: "
                              f"{', '.join(names)}")
