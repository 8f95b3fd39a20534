"""find_weights' common part: a framework's training step, data and optimizer as a profile of a snapshot.

The module is copied (the snapshot), every run starts from that copy, and each candidate is trained through the
framework's own loss code: the `lossdiag` attribute its training step calls `combine(terms, weights)` on is a
TermCapture that hands the terms to the profile, which applies its own weights. The runs, the yardstick and the
rule are lossdiag.profile's, so the recommendation is the one the CLI gives; the caller's model, optimizer and every
random number generator are left as they were, so the fit itself is unchanged.
"""
from __future__ import annotations

import copy
import dataclasses
import itertools
import warnings
from typing import Any, Callable, Iterable, Mapping, Optional

import torch

from lossdiag.api import ProfileResult, run_profile
from lossdiag.config import load
from lossdiag.errors import SpecError
from lossdiag.train.rng import preserved_rng
from lossdiag.train.spec import ModelSpec, to_device
from lossdiag.train.total import weighted_total

TermsFn = Callable[[torch.nn.Module, Any, "TermCapture"], None]


class TermCapture:
    """Stands in for the Monitor while find_weights runs the training step: keeps the terms and weights it is given.

    combine() returns the weighted sum, as the Monitor does, so code that logs the total keeps working.
    """

    def __init__(self) -> None:
        self.terms: Optional[dict[str, torch.Tensor]] = None
        self.weights: Optional[Mapping[str, Any]] = None
        self.steps = 0

    def combine(self, terms: Mapping[str, torch.Tensor], weights: Optional[Mapping[str, Any]] = None) -> torch.Tensor:
        self.record(terms, weights)
        return weighted_total(terms, weights)

    def record(self, terms: Mapping[str, torch.Tensor], weights: Optional[Mapping[str, Any]] = None) -> None:
        self.terms, self.weights = dict(terms), weights
        self.steps += 1

    def take(self, where: str) -> dict[str, torch.Tensor]:
        """The terms the last step passed to combine() or record(); a clear error when it passed none."""
        terms, self.terms = self.terms, None
        if terms is None:
            raise SpecError(f"find_weights: {where} did not call self.lossdiag.combine(terms, weights); the training "
                            f"step must form its total with it, as with the callback")
        return terms


def same_optimizer(live: torch.optim.Optimizer, live_model: torch.nn.Module,
                   model: torch.nn.Module) -> torch.optim.Optimizer:
    """A deep copy of `live` whose parameters are `model`'s (a copy of `live_model`): the same class, groups,
    hyperparameters and state, the optimizer's snapshot."""
    ours = {id(p): q for p, q in zip(live_model.parameters(), model.parameters())}
    if any(id(p) not in ours for group in live.param_groups for p in group["params"]):
        raise SpecError("find_weights: the optimizer holds parameters that are not the model's")
    return copy.deepcopy(live, memo=dict(ours))


@dataclasses.dataclass
class Snapshot:
    """What find_weights profiles: the module to copy, the framework's batches, its training step and optimizer, and
    its held-out batches (the outcome is measured on them when there are some, else on probe training batches)."""

    source: str
    module: torch.nn.Module
    batches: Callable[[], Iterable[Any]]
    step: TermsFn
    make_optimizer: Callable[[torch.nn.Module], torch.optim.Optimizer]
    evaluation: Optional[Callable[[], Iterable[Any]]] = None


def find(snapshot: Snapshot, options: Mapping[str, Any], progress: Optional[bool]) -> ProfileResult:
    """Profile the snapshot as lossdiag.profile would: the same runs, yardstick and rule, on a copy of the module."""
    capture = TermCapture()
    built: list[torch.nn.Module] = []

    def build_model() -> torch.nn.Module:
        built.append(copy.deepcopy(pristine))
        del built[:-1]
        return built[-1]

    def losses(model: torch.nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        device = next(model.parameters()).device
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*self.log.*")
            snapshot.step(model, to_device(batch, device), capture)
        return capture.take(snapshot.source)

    def make_optimizer(params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
        optimizer = snapshot.make_optimizer(built[-1])
        if all(group.get("lr", 1.0) == 0 for group in optimizer.param_groups):
            raise SpecError("find_weights: the optimizer's learning rate is 0 (its schedule has ended), so no run "
                            "from this state can train; call find_weights before training, or between fits")
        return optimizer

    with preserved_rng():
        pristine = copy.deepcopy(snapshot.module, {id(getattr(snapshot.module, "lossdiag", None)): None})
        weights = in_force(snapshot, pristine, capture)
        spec = ModelSpec(snapshot.source, build_model, snapshot.batches, losses, weights, make_optimizer,
                         validation_batches=snapshot.evaluation)
        return run_profile(spec, load(None, None, dict(options)), progress)


def chained(loaders: Any) -> Iterable[Any]:
    """The batches of one loader, or of several (a list, a tuple or a mapping of loaders) one after the other."""
    if isinstance(loaders, Mapping):
        loaders = list(loaders.values())
    if isinstance(loaders, (list, tuple)):
        return itertools.chain.from_iterable(loaders)
    return loaders


def in_force(snapshot: Snapshot, module: torch.nn.Module, capture: TermCapture) -> dict[str, float]:
    """The weights the training step passes to combine(), read from one step on the first batch, without gradients."""
    batch = next(iter(snapshot.batches()), None)
    if batch is None:
        raise SpecError(f"find_weights: {snapshot.source}'s training data yielded no batch")
    trial = copy.deepcopy(module)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*self.log.*")
        snapshot.step(trial, to_device(batch, next(trial.parameters()).device), capture)
    terms, weights = capture.take(snapshot.source), capture.weights or {}
    return {name: float(weights[name]) if name in weights else 1.0 for name in terms}
