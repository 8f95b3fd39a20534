"""What a recorder accepts: a step's terms (a model file's losses() and a Monitor's calls alike), and a Monitor's
thresholds and weights, checked on every call; the usual call (a dict of scalar float tensors, weights that are
numbers) is recognised cheaply, anything else gets the full checks and their one-line errors."""
from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional

import torch

from lossdiag.config import Config, check_known_terms, read_yaml, resolve
from lossdiag.errors import SpecError


def monitor_config(config: Config | Mapping[str, Any] | str | Path | None) -> Config:
    """The thresholds a Monitor diagnoses with: defaults, overlaid by a mapping or a YAML file."""
    if config is None or isinstance(config, Config):
        return config or Config()
    if isinstance(config, (str, Path)):
        return resolve(read_yaml(Path(config)), source=str(config))
    if isinstance(config, Mapping):
        return resolve(config, source="Monitor(config=...)")
    raise SpecError(f"Monitor: config must be a mapping of options or a YAML file's path, got {type(config).__name__}")


def ordered_values(terms: Any, weights: Any, names: list[str], known: frozenset[str]) -> list[torch.Tensor]:
    """The terms' values in the order of `names` (the first call's terms, `known` as a set), after checking the
    terms and the weights as check_terms and check_weights do; the usual call (a dict of the known names to scalar
    floating-point tensors) takes a few lookups."""
    if type(terms) is dict and terms.keys() == known and _usual_weights(weights, known):
        values = [terms[name] for name in names]
        for value in values:
            if type(value) is not torch.Tensor or value.dim() or not value.is_floating_point():
                break
        else:
            return values
    check_terms(terms, names)
    check_weights(weights, terms)
    return [terms[name] for name in names]


def _usual_weights(weights: Any, known: frozenset[str]) -> bool:
    """None, or a dict of known names to Python numbers (not bools) or one-element tensors."""
    if weights is None:
        return True
    if type(weights) is not dict or not weights.keys() <= known:
        return False
    for weight in weights.values():
        kind = type(weight)
        if not (kind is float or kind is int or kind is torch.Tensor and weight.numel() == 1):
            return False
    return True


def check_scalar_terms(terms: Any, where: str, what: str) -> dict[str, torch.Tensor]:
    """A non-empty mapping of string names to floating-point scalar tensors; `what` names who returned it."""
    if not isinstance(terms, Mapping) or not terms:
        raise SpecError(f"{where}{what} must be a non-empty mapping of term name to scalar tensor, "
                        f"got {terms!r:.80}")
    for name, value in terms.items():
        if not isinstance(name, str):
            raise SpecError(f"{where}term names must be strings, got {name!r}")
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            kind = value.dtype if isinstance(value, torch.Tensor) else type(value).__name__
            raise SpecError(f"{where}term '{name}' must be a floating-point scalar tensor, got {kind}")
        if value.dim() != 0:
            raise SpecError(f"{where}term '{name}' must be a scalar tensor, got shape {tuple(value.shape)}"
                            f" (reduce it, e.g. with .mean())")
    return dict(terms)


def check_terms(terms: Any, names: Optional[list[str]]) -> None:
    """Each term a floating-point scalar tensor, and the same names as on the first call (in any order)."""
    check_scalar_terms(terms, "Monitor: ", "terms")
    if names is not None and (len(terms) != len(names) or any(name not in terms for name in names)):
        missing = [name for name in names if name not in terms]
        new = [name for name in terms if name not in names]
        what = f"term '{missing[0]}' is missing" if missing else f"term '{new[0]}' is new"
        raise SpecError(f"Monitor: {what}; every call must pass the terms of the first call, {names}, "
                        f"got {list(terms)}")


def check_weights(weights: Any, terms: Mapping[str, torch.Tensor]) -> None:
    """Weights are a mapping whose names are all terms; missing terms weigh 1."""
    if weights is None:
        return
    if not isinstance(weights, Mapping):
        raise SpecError(f"Monitor: weights must be a mapping of term name to number, got {type(weights).__name__}")
    check_known_terms(weights, list(terms), "weights", "Monitor")
    for name, weight in weights.items():
        number = isinstance(weight, numbers.Real) and not isinstance(weight, bool)
        if not (number or isinstance(weight, torch.Tensor) and weight.numel() == 1):
            raise SpecError(f"Monitor: weight of '{name}' must be a number or a one-element tensor, "
                            f"got {type(weight).__name__} {weight!r:.40}")


def weight_values(weights: Optional[Mapping[str, Any]], names: list[str]) -> dict[str, float]:
    """Each term's weight as a float, 1.0 where none is given; a non-finite weight is a usage error."""
    values = {name: float(weights[name]) if weights is not None and name in weights else 1.0 for name in names}
    for name, value in values.items():
        if not math.isfinite(value):
            raise SpecError(f"Monitor: weight of '{name}' is {value}; weights must be finite numbers")
    return values
