"""Single-term checks: train each term alone from the profile's start and decide on the probe batches if it goes down."""
from __future__ import annotations

import dataclasses
import math
from typing import Collection, Optional

from lossdiag.train.runs import WeightedRun
from lossdiag.analyse.run import RunData
from lossdiag.config import Config
from lossdiag.checks.findings import Finding, Severity
from lossdiag.record.kinds import CheckCode, CheckStatus
from lossdiag.record.schema import CheckRecord

MIN_STEPS = 10
PASS, FAIL, SKIPPED = CheckStatus.PASS, CheckStatus.FAIL, CheckStatus.SKIPPED
NOT_DECREASING, DIVERGING = CheckCode.NOT_DECREASING, CheckCode.DIVERGING


@dataclasses.dataclass(frozen=True)
class Trend:
    """A term's mean on the probe batches before and after a run, its relative drop and that drop's standard error."""

    start: float
    end: float
    relative_drop: Optional[float]
    noise: Optional[float]
    steps: int


def trend_of(run: WeightedRun, term: str) -> Trend:
    """The probe figures of one term after a run."""
    return Trend(run.before.get(term, math.nan), run.after.get(term, math.nan), run.progress.get(term),
                 run.noise.get(term), run.steps)


@dataclasses.dataclass(frozen=True)
class Assessment:
    """A check's outcome: status, failure code and why."""

    status: CheckStatus
    code: Optional[CheckCode]
    reason: Optional[str]


def assess(trend: Trend, config: Config) -> Assessment:
    """Decide from the probe batches, with their noise (z = check_noise_z standard errors) both ways.

    Pass: a drop beyond the noise (one below check_min_drop passes as slow, with its figure). Diverging: a rise of
    check_max_rise or more beyond the noise, or a non-finite value. Not-decreasing: no drop beyond the noise, and a
    drop of check_min_drop is ruled out by it. Anything else (a change inside the noise that could still hide a
    drop of check_min_drop) is inconclusive: skipped with the figures, not an error.
    """
    if trend.steps < MIN_STEPS:
        return Assessment(SKIPPED, None, f"{trend.steps} steps are too few to decide (at least {MIN_STEPS})")
    if not math.isfinite(trend.start):
        return Assessment(SKIPPED, None, "the term was not finite on the probe batches at the start")
    if not math.isfinite(trend.end) or trend.relative_drop is None:
        return Assessment(FAIL, DIVERGING, "the term became non-finite, trained alone")
    drop, margin = trend.relative_drop, config.check_noise_z * (trend.noise or 0.0)
    figure = f"{_signed_percent(-drop)} on the probe batches over {trend.steps} steps (noise: one standard error {trend.noise or 0:.1%})"
    if drop > margin:
        if drop >= config.check_min_drop:
            return Assessment(PASS, None, None)
        return Assessment(PASS, None, f"slow: it went {figure}; more --check-steps show how far it goes")
    if -drop >= config.check_max_rise and -drop > margin:
        return Assessment(FAIL, DIVERGING, f"the term rose {figure}, trained alone")
    if drop + margin < config.check_min_drop:
        return Assessment(FAIL, NOT_DECREASING, f"the term did not go down: it went {figure}, trained alone")
    return Assessment(SKIPPED, None, f"inconclusive: it went {figure}, inside the noise; raise --check-steps "
                                     f"or probe_batches to decide")


def check_record(index: int, term: str, run: WeightedRun, config: Config) -> dict:
    """The `check` record of one term trained alone: its training curve, the probe figures and the decision."""
    trend = trend_of(run, term)
    result = assess(trend, config)
    if run.steps and run.skipped_updates == run.steps:
        result = Assessment(SKIPPED, None, "no step could be applied: its loss or gradient was non-finite on "
                                           "every step (non-finite)")
    return CheckRecord(index, term, result.status, result.code, [values[term] for values in run.losses], trend.start,
                       trend.end, trend.relative_drop, result.reason, trend.steps, trend.noise,
                       len(run.before_batches), run.skipped_updates, run.on, run.before_batches,
                       run.after_batches).to_record()


def skipped_record(index: int, term: str, reason: str) -> dict:
    """The `check` record of a term that cannot be trained alone."""
    return CheckRecord(index, term, SKIPPED, None, [], None, None, None, reason, 0, None, 0, 0).to_record()


def check_findings(run: RunData, config: Config, needs_others: Collection[str] = ()) -> list[Finding]:
    """`not-decreasing` and `diverging` from the run's check records, with the figures and thresholds.

    A term in `needs_others` does not go down alone but does under the combined loss: it needs the other terms'
    supervision (an auxiliary-fed head), which is no fault, so its `not-decreasing` is information, not an error.
    """
    found = []
    for record in run.extra.get("check", []):
        if record.get("status") != FAIL:
            continue
        term, code = record["term"], record["code"]
        if code == NOT_DECREASING and term in needs_others:
            found.append(Finding(code, Severity.INFO, [term], _message(record, config) + "; under the combined loss it "
                                 "does go down: it needs the other terms, it is not broken", NEEDS_OTHERS_ADVICE,
                                 record.get("relative_drop"), _threshold(code, config)))
            continue
        found.append(Finding(code, Severity.ERROR, [term], _message(record, config), ADVICE[code],
                             record.get("relative_drop"), _threshold(code, config)))
    return found


NEEDS_OTHERS_ADVICE = "nothing to fix: it learns from the features the other terms train"
ADVICE = {
    NOT_DECREASING: "check that its targets match its inputs (shuffled or misaligned labels), its sign and "
                    "reduction, and make_optimizer's learning rate; a term that is only slow to start needs more "
                    "steps (--check-steps)",
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
        figures += f" ({_signed_percent(-drop)})"
    rule = (f"a pass needs a drop beyond {config.check_noise_z:g} noise standard errors; not-decreasing: "
            f"no such drop, and a drop of {config.check_min_drop:.0%} ruled out by the noise")
    if record["code"] == DIVERGING:
        rule = f"diverging: a rise of {config.check_max_rise:.0%} or more, or a non-finite value"
    noise = record.get("noise")
    spread = f", noise: one standard error {noise:.1%}" if noise is not None else ""
    return (f"'{term}' trained alone for {steps} steps from the initial state went {figures} on "
            f"{record.get('probe_batches', 0)} fixed probe batches{spread} ({rule})")


def _signed_percent(change: float) -> str:
    """A relative change with its sign, one decimal; past +-1000%, 3 significant digits."""
    return f"{change:+.1%}" if abs(change) < 10 else f"{change * 100:+.3g}%"


def _number(value: Optional[float]) -> str:
    return "non-finite" if value is None or not math.isfinite(value) else f"{value:.4g}"
