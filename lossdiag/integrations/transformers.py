"""Hugging Face Trainer: subclass `LossDiagTrainer` instead of `Trainer`, and let `compute_loss` return
`self.lossdiag.combine(terms, weights)`; the scalars land in the Trainer's own logs. `find_weights(trainer)` verifies
the weights from the same state."""
from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping, Optional

import torch
from transformers import Trainer, TrainerCallback

from lossdiag.api import ProfileResult
from lossdiag.integrations._steps import StepMap
from lossdiag.integrations._verify import Snapshot, TermCapture, chained, find, same_optimizer
from lossdiag.monitor import Monitor


class LossDiagMixin:
    """Gives a Trainer (or a subclass such as Seq2SeqTrainer) a lossdiag.Monitor, as `self.lossdiag`, while it trains.

    `lossdiag=` holds the Monitor's options (out, every, scope, at, early, config). Each recorded step's scalars
    (lossdiag/<term>/share, ...) go through `Trainer.log`, so they are in `state.log_history` and in every
    report_to integration (TensorBoard, W&B), at the global step (and epoch) of the update that step's batch
    belongs to, once the monitor brings them to the host (a few steps later, see Monitor). The end of training, or an
    exception, closes the monitor: summary.json, report.html and the PNGs in `out`; `lossdiag_summary` holds it.
    """

    def __init__(self, *args: Any, lossdiag: Optional[Mapping[str, Any]] = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lossdiag_options = dict(lossdiag or {})
        self.lossdiag: Optional[Monitor] = None
        self.lossdiag_summary: Optional[dict] = None
        # First in line, so the monitor closes (and logs its last steps) before report_to writers close.
        self.callback_handler.callbacks.insert(0, _MonitorHooks(self))

    def train(self, *args: Any, **kwargs: Any) -> Any:
        """Trainer.train(); an exception closes the monitor first, so its records and report stay."""
        try:
            return super().train(*args, **kwargs)
        except BaseException as exc:
            if self.lossdiag is not None:
                self.lossdiag.__exit__(type(exc), exc, exc.__traceback__)
            raise


class LossDiagTrainer(LossDiagMixin, Trainer):
    """`transformers.Trainer` with a lossdiag.Monitor as `self.lossdiag` during training (see LossDiagMixin)."""


class _MonitorHooks(TrainerCallback):
    """Opens the monitor when training begins, maps its recorded steps to global steps, closes it at the end."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        self.global_steps = StepMap()

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        trainer = self.trainer
        self.global_steps = StepMap()
        trainer.lossdiag = Monitor(trainer.model, log=self.log, framework="transformers", **trainer.lossdiag_options)

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._mark(state)

    def on_substep_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._mark(state)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.trainer.lossdiag is not None:
            self.trainer.lossdiag_summary = self.trainer.lossdiag.close()

    def _mark(self, state: Any) -> None:
        """The next micro-batch belongs to update global_step + 1 (the step the Trainer logs it at), from this epoch."""
        self.global_steps.mark(self.trainer.lossdiag, (state.global_step + 1, state.epoch))

    def log(self, scalars: dict[str, float], step: int) -> None:
        """Trainer.log with the Trainer's step and epoch set, for this one call, to the recorded step's update."""
        state = self.trainer.state
        now = (state.global_step, state.epoch)
        state.global_step, state.epoch = self.global_steps.take(step, now)
        try:
            self.trainer.log(dict(scalars))
        finally:
            state.global_step, state.epoch = now


def find_weights(trainer: Trainer, *, progress: Optional[bool] = None, **options: Any) -> ProfileResult:
    """Verify weights where the Trainer trains, before or between calls to train().

    Snapshots the model, the optimizer (the Trainer's, with its state, once it has one, looked through accelerate's
    wrapper; else the one create_optimizer() makes) and every RNG, runs the candidates from that state through
    `compute_loss` on the Trainer's training data (get_train_dataloader(), inputs prepared as train() prepares them),
    judges each run by each term's loss at its end on `eval_dataset` when the Trainer has one (else on probe
    training batches), and returns lossdiag.profile's result: the same runs, yardstick and rule as the CLI.
    `compute_loss` must form its total with `self.lossdiag.combine(terms, weights)`. `options` are
    lossdiag.profile's (steps, check_steps, seed, out, ...). The model, the Trainer and every RNG are left as they
    were, so training after it is training without it.
    """
    live = trainer.model

    def step(model: torch.nn.Module, inputs: Any, capture: TermCapture) -> None:
        saved = getattr(trainer, "lossdiag", None)
        trainer.lossdiag = capture
        try:
            trainer.compute_loss(model, trainer._prepare_inputs(inputs))
        finally:
            trainer.lossdiag = saved

    def make_optimizer(model: torch.nn.Module) -> torch.optim.Optimizer:
        if trainer.optimizer is not None:
            return same_optimizer(getattr(trainer.optimizer, "optimizer", trainer.optimizer), live, model)
        try:
            return trainer.create_optimizer(model)
        finally:
            trainer.optimizer = None

    snapshot = Snapshot(f"{type(trainer).__name__}.compute_loss", live, trainer.get_train_dataloader, step,
                        make_optimizer, _evaluation_batches(trainer))
    return find(snapshot, options, progress)


def _evaluation_batches(trainer: Trainer) -> Optional[Callable[[], Iterable[Any]]]:
    """The Trainer's evaluation data, as evaluate() batches it (every named set of a mapping in turn), or None."""
    if trainer.eval_dataset is None:
        return None
    if isinstance(trainer.eval_dataset, Mapping):
        return lambda: chained({name: trainer.get_eval_dataloader(name) for name in trainer.eval_dataset})
    return trainer.get_eval_dataloader
