"""Follow a weighting advice the way a user would, in plain PyTorch, and judge it on held-out batches.

A model file (CONTRACT section 1) is loaded by path and trained from the start a profile uses (the seed, then
`build_model()`, `make_optimizer`, the batch stream from `batches()` called again whenever it runs out) on
`sum(weights[k] * term_k)` for a stated number of steps; then each term is averaged over `validation_batches()`
with the model in eval mode and without gradients, and `validate(model)` adds its metrics when the file has it.
No lossdiag code runs here, so an acceptance test that follows the profile's weights with this harness checks
the advice against an independent outcome.

Run as a script to print a fixture's held-out losses under several weightings:
    python tests/outcomes.py MODEL_PY [--steps N] [--seeds 0 1] [--weights a=W,b=W] [--weights ...]
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import itertools
import random
import statistics
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Iterator, Mapping, Optional, Sequence

import numpy as np
import torch

STEPS = 100   # the length of the profile's runs from the start (its check_steps default)


@dataclasses.dataclass(frozen=True)
class Outcome:
    """Held-out figures after one training run: each term's mean over validation_batches() and validate()'s metrics."""

    weights: dict[str, float]
    seed: int
    steps: int
    terms: dict[str, float]
    metrics: dict[str, float]


def load(path: Path | str) -> ModuleType:
    """Import a model file by path, its own folder first on sys.path, as a fresh module every call."""
    path = Path(path).resolve()
    sys.path.insert(0, str(path.parent))
    try:
        spec = importlib.util.spec_from_file_location(f"outcome_model_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
    return module


def weights_in_force(module: ModuleType, terms: Sequence[str]) -> dict[str, float]:
    """The model file's weights, 1.0 for the terms it does not name."""
    given = dict(getattr(module, "weights", {}) or {})
    return {name: float(given.get(name, 1.0)) for name in terms}


def term_names(module: ModuleType) -> list[str]:
    """The terms the model file's losses() returns, in its order (one forward pass on the first batch)."""
    seed_everything(0)
    model = module.build_model()
    with torch.no_grad():
        return list(module.losses(model, next(iter(module.batches()))))


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch, as a user's training script does before building its model."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def forever(module: ModuleType) -> Iterator[Any]:
    """The training batches: batches() called again each time it runs out."""
    for _ in itertools.count():
        yield from module.batches()


def train(module: ModuleType, weights: Mapping[str, float], steps: int, seed: int) -> torch.nn.Module:
    """A plain training loop: seed, build, the file's optimizer, `steps` steps on the weighted sum of the terms."""
    seed_everything(seed)
    model = module.build_model()
    model.train()
    make_optimizer = getattr(module, "make_optimizer", lambda params: torch.optim.Adam(params, lr=1e-3))
    optimizer = make_optimizer(model.parameters())
    for batch in itertools.islice(forever(module), steps):
        terms = module.losses(model, batch)
        loss = sum(float(weights.get(name, 1.0)) * value for name, value in terms.items())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model


def held_out(module: ModuleType, model: torch.nn.Module) -> tuple[dict[str, float], dict[str, float]]:
    """Each term's mean over validation_batches() and validate()'s metrics, in eval mode, without gradients."""
    model.eval()
    sums: dict[str, float] = {}
    count = 0
    with torch.no_grad():
        for batch in module.validation_batches():
            for name, value in module.losses(model, batch).items():
                sums[name] = sums.get(name, 0.0) + float(value)
            count += 1
        metrics = {name: float(value) for name, value in getattr(module, "validate", lambda m: {})(model).items()}
    model.train()
    return {name: total / count for name, total in sums.items()}, metrics


def follow(path: Path | str, weights: Optional[Mapping[str, float]] = None, steps: int = STEPS,
           seeds: Sequence[int] = (0,)) -> list[Outcome]:
    """Train the model file under `weights` (default: the file's own) once per seed and measure each run held-out."""
    module = load(path)
    terms = term_names(module)
    chosen = {**weights_in_force(module, terms), **dict(weights or {})}
    found = []
    for seed in seeds:
        model = train(module, chosen, steps, seed)
        seed_everything(seed)   # the same draws (a VAE's sampled code, dropout) for every weighting evaluated
        values, metrics = held_out(module, model)
        found.append(Outcome(dict(chosen), seed, steps, values, metrics))
    return found


def mean_terms(outcomes: Sequence[Outcome]) -> dict[str, float]:
    """Each term's held-out loss averaged over the runs (seeds)."""
    return {name: statistics.fmean(o.terms[name] for o in outcomes) for name in outcomes[0].terms}


def _parse_weights(text: str) -> dict[str, float]:
    return {name: float(value) for name, value in (part.split("=") for part in text.split(",") if part)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--weights", type=_parse_weights, action="append", default=[])
    args = parser.parse_args()
    torch.set_num_threads(1)
    for weights in [{}] + args.weights:
        for outcome in follow(args.model, weights, args.steps, args.seeds):
            shown = ", ".join(f"{k} {v:.4g}" for k, v in {**outcome.terms, **outcome.metrics}.items())
            print(f"seed {outcome.seed} steps {outcome.steps} weights {outcome.weights}: {shown}")


if __name__ == "__main__":
    main()
