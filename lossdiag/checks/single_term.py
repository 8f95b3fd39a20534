"""Single-term checks: train on each term alone from the profile's start and decide, noise-aware, if it goes down."""
from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Optional, Sequence

import numpy as np

from lossdiag.analyse.run import RunData, finite_median
from lossdiag.config import Config
from lossdiag.findings import Finding
from lossdiag.profiler import finite_gradients, start_training
from lossdiag.progress import Progress
from lossdiag.spec import ModelSpec, compute_terms, to_device

MIN_STEPS = 10
MIN_WINDOW = 3
PASS, FAIL, SKIPPED = "pass", "fail", "skipped"
NOT_DECREASING, DIVERGING = "not-decreasing", "diverging"
SE_OF_MEDIAN = math.sqrt(math.pi / 2)


@dataclasses.dataclass(frozen=True)
class Trend:
    """A loss curve's smoothed start and end (medians of its first and last windows) and its step noise."""

    start: float
    end: float
    relative_drop: Optional[float]
    noise: float
    start_window: int
    end_window: int
    steps: int

    @property
    def drop(self) -> float:
        return self.start - self.end

    def standard_error(self) -> float:
        """Standard error of the difference of the two window medians, from the step-to-step noise."""
        return SE_OF_MEDIAN * self.noise * math.sqrt(1.0 / self.start_window + 1.0 / self.end_window)


def step_noise(values: np.ndarray) -> float:
    """Robust standard deviation of a curve's noise from its successive differences, blind to a slow trend."""
    diffs = np.diff(values[np.isfinite(values)])
    if diffs.size < 2:
        return 0.0
    return float(1.4826 * np.median(np.abs(diffs - np.median(diffs))) / math.sqrt(2.0))


def measure(values: Sequence[Optional[float]], config: Config) -> Trend:
    """Smoothed start and end of a loss curve and the relative drop between them (None when undefined).

    The start window is the shorter one: a curve moves fastest at its start and flattens towards its end.
    """
    series = np.array([math.nan if v is None else v for v in values], dtype=float)
    first = max(MIN_WINDOW, math.ceil(config.check_start_window * len(series)))
    last = max(MIN_WINDOW, math.ceil(config.check_end_window * len(series)))
    start, end = finite_median(series[:first]), finite_median(series[-last:])
    relative = None
    if math.isfinite(start) and math.isfinite(end):
        relative = (start - end) / abs(start) if start != 0 else (0.0 if end == 0 else math.copysign(math.inf, -end))
    return Trend(start, end, relative, step_noise(series), first, last, len(series))


@dataclasses.dataclass(frozen=True)
class Assessment:
    """A check's outcome: status, failure code and why."""

    status: str
    code: Optional[str]
    reason: Optional[str]


def assess(trend: Trend, config: Config) -> Assessment:
    """Pass when the smoothed drop reaches check_min_drop and exceeds check_noise_z standard errors.

    A drop that reaches check_min_drop but not the noise margin is inconclusive (skipped, not a failure: too few
    steps to tell). Diverging when the loss rises by check_max_rise (beyond the noise) or turns non-finite;
    else not-decreasing.
    """
    if trend.steps < MIN_STEPS:
        return Assessment(SKIPPED, None, f"{trend.steps} steps are too few to decide (at least {MIN_STEPS})")
    if not math.isfinite(trend.start):
        return Assessment(SKIPPED, None, "the term was not finite at the start, trained alone")
    if not math.isfinite(trend.end):
        return Assessment(FAIL, DIVERGING, "the term became non-finite, trained alone")
    margin = config.check_noise_z * trend.standard_error()
    if trend.relative_drop >= config.check_min_drop:
        if trend.drop > margin:
            return Assessment(PASS, None, None)
        return Assessment(SKIPPED, None, f"inconclusive: it went down {trend.relative_drop:.0%} trained alone, "
                                         f"within {config.check_noise_z:g} noise standard errors over "
                                         f"{trend.steps} steps; raise --check-steps to decide")
    if -trend.relative_drop >= config.check_max_rise and -trend.drop > margin:
        return Assessment(FAIL, DIVERGING, "the term rose, trained alone")
    return Assessment(FAIL, NOT_DECREASING, "the term did not go down clearly, trained alone")


def train_alone(spec: ModelSpec, config: Config, initial_state: dict, term: str,
                progress: Optional[Progress] = None) -> tuple[list[float], int]:
    """Train a fresh copy on one term (weight 1) for check_steps; its value every step and the steps skipped.

    A step whose loss or gradient is not finite is not applied, as in the profile.
    """
    model, optimizer, stream, device = start_training(spec, config, initial_state)
    parameters = [p for p in model.parameters() if p.requires_grad]
    names: Optional[list[str]] = None
    values: list[float] = []
    skipped = 0
    for _ in range(config.check_steps):
        terms = compute_terms(spec, model, to_device(next(stream), device), names)
        names = names or list(terms)
        value = terms[term]
        values.append(float(value.detach()))
        optimizer.zero_grad(set_to_none=True)
        finite = math.isfinite(values[-1]) and value.requires_grad
        if finite:
            value.backward()
            finite = finite_gradients(parameters)
        if finite:
            optimizer.step()
        else:
            skipped += 1
        if progress is not None:
            progress.update()
    return values, skipped


def check_record(index: int, term: str, values: list[float], skipped: int, config: Config) -> dict:
    """The `check` record of one term trained alone: its curve, the smoothed figures and the decision."""
    trend = measure(values, config)
    result = assess(trend, config)
    if values and skipped == len(values):
        result = Assessment(SKIPPED, None, "no step could be applied: its loss or gradient was non-finite on "
                                           "every step (non-finite)")
    return {"kind": "check", "step": index, "term": term, "status": result.status, "code": result.code,
            "losses": values, "loss_start": trend.start, "loss_end": trend.end,
            "relative_drop": trend.relative_drop, "reason": result.reason, "steps": trend.steps,
            "start_window": trend.start_window, "end_window": trend.end_window, "noise": trend.noise,
            "nonfinite_steps": skipped}


def skipped_record(index: int, term: str, reason: str) -> dict:
    """The `check` record of a term that cannot be trained alone."""
    return {"kind": "check", "step": index, "term": term, "status": SKIPPED, "code": None, "losses": [],
            "loss_start": None, "loss_end": None, "relative_drop": None, "reason": reason, "steps": 0,
            "start_window": 0, "end_window": 0, "noise": None, "nonfinite_steps": 0}


def single_term_records(spec: ModelSpec, config: Config, initial_state: dict, terms: Sequence[str],
                        skip: Mapping[str, str], progress: Optional[Progress] = None) -> list[dict]:
    """One `check` record per term: trained alone from the initial state, or skipped with the reason given."""
    records = []
    for index, term in enumerate(terms):
        if term in skip:
            records.append(skipped_record(index, term, skip[term]))
            if progress is not None:
                progress.update(config.check_steps)
            continue
        values, skipped = train_alone(spec, config, initial_state, term, progress)
        records.append(check_record(index, term, values, skipped, config))
    return records


def check_findings(run: RunData, config: Config) -> list[Finding]:
    """`not-decreasing` and `diverging` from the run's check records, with the figures and thresholds."""
    found = []
    for record in run.extra.get("check", []):
        if record.get("status") != FAIL:
            continue
        term, code = record["term"], record["code"]
        found.append(Finding(code, "error", [term], _message(record, config), ADVICE[code],
                             record.get("relative_drop"), _threshold(code, config)))
    return found


ADVICE = {
    NOT_DECREASING: "the term cannot be minimised on its own: check that its targets match its inputs "
                    "(shuffled or misaligned labels), its sign and reduction, and make_optimizer's learning rate; "
                    "a term that is only slow to start needs more steps (--check-steps)",
    DIVERGING: "lower make_optimizer's learning rate, or check the term's sign and scale "
               "(a loss to be minimised, not maximised; a log or division that can blow up)",
}


def _threshold(code: str, config: Config) -> float:
    return config.check_min_drop if code == NOT_DECREASING else -config.check_max_rise


def _message(record: dict, config: Config) -> str:
    term, steps = record["term"], record["steps"]
    start, end, drop = record.get("loss_start"), record.get("loss_end"), record.get("relative_drop")
    figures = f"from {_number(start)} to {_number(end)}"
    if drop is not None:
        figures += f" ({0.0 - drop:+.1%})"
    rule = (f"a pass needs a drop of at least {config.check_min_drop:.0%} and more than "
            f"{config.check_noise_z:g} noise standard errors")
    if record["code"] == DIVERGING:
        rule = f"diverging: a rise of {config.check_max_rise:.0%} or more, or a non-finite value"
    return (f"'{term}' trained alone for {steps} steps from the initial state went {figures}, "
            f"medians of the first {record['start_window']} and last {record['end_window']} steps ({rule})")


def _number(value: Optional[float]) -> str:
    return "non-finite" if value is None or not math.isfinite(value) else f"{value:.4g}"
