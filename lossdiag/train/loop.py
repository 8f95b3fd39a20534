"""The profile's training loop: a recorded step costs one backward pass per term and none for the total."""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Iterable, Iterator, Mapping, Optional

import torch

from lossdiag.config import Config, check_known_terms, origin_of
from lossdiag.errors import SpecError
from lossdiag.train.progress import Progress
from lossdiag.record.gradients import nonfinite_terms, recorded_step
from lossdiag.record.kinds import Kind
from lossdiag.record.shared import Layout, discover, layout_record, measurability_problem
from lossdiag.record.schema import run_header
from lossdiag.record.stream import RecordWriter
from lossdiag.train.rng import seed_everything
from lossdiag.train.spec import ModelSpec, batch_stream, build, compute_terms, make_optimizer, to_device
from lossdiag.train.total import weighted_total


def with_model_targets(spec: ModelSpec, config: Config) -> Config:
    """The config with the model file's target_shares and main terms where neither YAML nor the command line gave
    any, so that every run (profile, sweep) checks and uses the same targets and main terms."""
    if config.target_shares is None and spec.target_shares:
        config = dataclasses.replace(config, target_shares=dict(spec.target_shares))
    if config.main is None and spec.main:
        config = dataclasses.replace(config, main=list(spec.main))
    return config


def resolve_weights(spec: ModelSpec, terms: list[str], override: Optional[Mapping[str, float]]) -> dict[str, float]:
    """Weights in force: the model file's, overridden term by term; 1.0 for terms neither names; unknown names,
    and weights that are all 0 (no term would be trained), are errors."""
    given = {**dict(spec.weights), **dict(override or {})}
    check_known_terms(given, terms, "weights", spec.source)
    weights = {name: float(given.get(name, 1.0)) for name in terms}
    if not any(weights.values()):
        raise spec.user_error(f"every weight is 0, so no term would be trained and there is no gradient to measure; "
                              f"give at least one term a weight above 0 (the weights: {weights})")
    return weights


def header(spec: ModelSpec, config: Config, terms: list[str], weights: dict[str, float], layout: Layout) -> dict:
    """The first record of a run: what was profiled, how, and which parameters the terms share."""
    return run_header(spec.source, terms, weights, config, scope="all", nonfinite_updates="skipped",
                      **layout.describe())


def finite_gradients(parameters: Iterable[torch.nn.Parameter]) -> bool:
    """Whether every gradient set on the parameters is finite, so an optimizer step cannot poison them."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return True
    largest = torch._foreach_norm(grads, math.inf)  # the largest |element| cannot overflow, unlike a 2-norm
    return bool(torch.isfinite(torch.stack([value.double() for value in largest])).all())


def device_of(config: Config) -> Optional[torch.device]:
    """The device --device names, or None to leave the model and batches where the model file puts them."""
    return torch.device(config.device) if config.device else None


def start_training(spec: ModelSpec, config: Config, initial_state: Optional[dict]
                   ) -> tuple[torch.nn.Module, torch.optim.Optimizer, Iterator[Any], Optional[torch.device]]:
    """A seeded model from the initial state, a fresh optimizer and the batch stream, as every run starts."""
    seed_everything(config.seed)
    model = build(spec)
    if initial_state is not None:
        model.load_state_dict(initial_state)
    device = device_of(config)
    if device is not None:
        model.to(device)
    model.train()
    return model, make_optimizer(spec, model), batch_stream(spec), device


@dataclasses.dataclass
class TrainingRun:
    """A model trained for a number of steps on the weighted sum of the terms."""

    spec: ModelSpec
    config: Config
    weights_override: Optional[Mapping[str, float]] = None
    initial_state: Optional[dict] = None

    def record(self, writer: Optional[RecordWriter] = None, progress: Optional[Progress] = None) -> list[dict]:
        """Train for config.steps, recording each term's value every step and its gradients every `every`.

        A step whose update is not finite is recorded but not applied, so one bad batch cannot poison the model.
        """
        model, optimizer, stream, device = start_training(self.spec, self.config, self.initial_state)
        records: list[dict] = []
        names: Optional[list[str]] = None
        weights: dict[str, float] = {}
        order = [name for name, _ in model.named_parameters()]
        layout: Optional[Layout] = None
        for step in range(self.config.steps):
            batch = to_device(next(stream), device)
            terms = compute_terms(self.spec, model, batch, names, f" at step {step}")
            if names is None:
                names = list(terms)
                weights = resolve_weights(self.spec, names, self.weights_override)
                check_known_terms(self.config.target_shares or {}, names, "target_shares",
                                  origin_of(self.config, "target_shares", self.spec.source))
                layout = discover(model, terms)
                problem = measurability_problem(terms, layout)
                if problem is not None:
                    raise self.spec.user_error(problem)
                records.append(header(self.spec, self.config, names, weights, layout))
                if writer is not None:
                    writer.write(records[0])
            values = dict(zip(names, torch.stack([t.detach().float() for t in terms.values()]).tolist()))
            optimizer.zero_grad(set_to_none=True)
            record: dict = {"kind": Kind.STEP, "step": step, "loss": values}
            new: list[dict] = []
            stats = None
            if step % self.config.every == 0:
                stats, reached = recorded_step(model, terms, weights)
                record["grad"] = {"weights": weights, **stats}
                joined = layout.union(reached, order)
                if joined is not layout:
                    layout = joined
                    new.append(layout_record(step, layout.describe()))
            else:
                trained = {name: value for name, value in terms.items() if value.requires_grad}
                if trained:
                    weighted_total(trained, weights).backward()
            bad = nonfinite_terms(values, stats, names)
            if bad:
                record["nonfinite"] = bad
            hidden = not bad and stats is None and not finite_gradients(model.parameters())
            if not (bad or hidden):
                optimizer.step()
            new += [record, {"kind": Kind.NONFINITE_UPDATE, "step": step}] if hidden else [record]
            records.extend(new)
            if writer is not None:
                writer.write_many(new)
            if progress is not None:
                progress.update()
        end = {"kind": Kind.END, "step": self.config.steps - 1, "steps": self.config.steps}
        records.append(end)
        if writer is not None:
            writer.write(end)
        return records


def initial_state(spec: ModelSpec, config: Config) -> dict:
    """The state every round starts from: the model build_model() gives under the configured seed."""
    seed_everything(config.seed)
    model = build(spec)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def ensure_steps(config: Config) -> None:
    """A profile needs at least one recorded step."""
    if config.every > config.steps:
        raise SpecError(f"--every {config.every} is larger than --steps {config.steps}: only the first step would be "
                        f"recorded, at initialisation, where gradient norms do not yet say how training balances")
