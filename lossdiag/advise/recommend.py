"""The profile's recommendation: the one rule (lossdiag.advise.rule) over the runs its records hold.

The records carry each run from the same start (each term alone, the weights in force, every candidate) with
each term's loss on each evaluation batch at its start and end; this module turns them into the rule's
Evidence, asks the rule, and adds what the report shows beside the decision: each run's shares and progress.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Optional, Sequence

import numpy as np

from lossdiag.advise.candidates import rescaled, share_balancing
from lossdiag.analyse.outcome import RunEnd
from lossdiag.advise.decision import PROBE, REWEIGHT, Evidence, Recommendation
from lossdiag.advise.rule import decide
from lossdiag.checks.situations import STARVED, situations
from lossdiag.analyse.quantities import shares_among
from lossdiag.analyse.run import RunData, finite_median
from lossdiag.config import Config

SPREAD_WIDE = 2.0
MONITOR = "monitor"


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What one run from the start under `weights` measured, for display: the shares at its end, each term's
    relative drop on the evaluation batches (and its noise), and the terms it leaves starved."""

    weights: dict[str, float]
    shares: dict[str, float]
    applied_shares: dict[str, float]
    progress: dict[str, Optional[float]]
    noise: dict[str, Optional[float]]
    starved: list[str]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def resolve_targets(terms: Sequence[str], given: Optional[Mapping[str, float]]) -> dict[str, float]:
    """Target shares over `terms`: the given ones (normalised to sum 1 when they reach 1), the rest split what is
    left equally (or, when nothing is left, weigh the mean given share); equal shares when none is given."""
    given = {t: float(v) for t, v in (given or {}).items() if t in terms}
    missing = [t for t in terms if t not in given]
    total = sum(given.values())
    if missing and total < 1.0:
        found = {**given, **{t: (1.0 - total) / len(missing) for t in missing}}
    else:
        fill = total / len(given) if given else 1.0
        found = {**given, **{t: fill for t in missing}}
    norm = sum(found.values())
    return {t: found[t] / norm for t in terms} if norm > 0 else {}


def run_end(record: dict) -> RunEnd:
    """A run record's end figures as the rule reads them."""
    weights = record["weights"] if "weights" in record else {record["term"]: 1.0}
    return RunEnd(dict(weights), [dict(b) for b in record["end_batches"]],
                  int(record.get("skipped_updates", record.get("nonfinite_steps", 0)) or 0))


def evidence(run: RunData, config: Config, shares: Mapping[str, float], dominant: Optional[str]) -> Evidence:
    """The rule's evidence from a profile's records (no run under the weights in force: a Monitor, --no-verify,
    or records from a version that kept no per-batch end figures)."""
    current = {t: float(run.meta.get("weights", {}).get(t, 1.0)) for t in run.terms}
    checks = run.extra.get("check", [])
    learners = [t for t in run.shared_terms if any(c["term"] == t and c.get("status") == "pass" for c in checks)]
    targets = resolve_targets(learners if checks else list(run.shared_terms), config.target_shares)
    in_force = [r for r in run.extra.get("progress", []) if "end_batches" in r]
    record = in_force[-1] if in_force else None
    return Evidence(
        terms=list(run.terms), weights=current, on=record.get("on", PROBE) if record else PROBE,
        start=[dict(b) for b in record["start_batches"]] if record else [],
        in_force=run_end(record) if record else None,
        alone={c["term"]: run_end(c) for c in checks if c.get("end_batches")},
        candidates=[run_end(r) for r in run.extra.get("verify", []) if "end_batches" in r],
        shares={t: s for t, s in shares.items() if t in run.shared_terms and math.isfinite(s)},
        dominant=dominant, targets=targets, main=list(config.main or []), user_targets=bool(config.target_shares),
        shared=list(run.shared_terms))


def _outcome(record: dict, found: Evidence, config: Config) -> Outcome:
    """A run record as the report shows it; `starved` names the terms it leaves starved."""
    starved = []
    if found.in_force is not None and "end_batches" in record:
        starved = [t for t, s in situations(found.terms, found.start, run_end(record), found.alone, config,
                                            found.shared).items() if s.name == STARVED]
    return Outcome(dict(record["weights"]), dict(record.get("shares", {})), dict(record.get("applied_shares", {})),
                   dict(record.get("progress", {})), dict(record.get("noise", {})), starved)


def _window_shares(run: RunData, rows: np.ndarray) -> dict[str, float]:
    """Shares of the median weighted norms over some recorded steps, among the terms on shared parameters (the one
    share definition: NaN for every term where one median is undefined, which no candidate then moves)."""
    medians = {t: finite_median((np.abs(run.weights) * run.norms)[rows, k]) for k, t in enumerate(run.terms)
               if t in run.shared_terms}
    return shares_among(medians)


def _spread(run: RunData, final: Mapping[str, float], current: Mapping[str, float], targets: Mapping[str, float],
            total: float) -> dict[str, tuple[float, float]]:
    """Each recommended weight moved as share balancing from the first and from the second half of the recorded
    window moves it: the range of the three values (how firmly the recorded window fixes the weights)."""
    steps = len(run.grad_steps)
    if steps < 2:
        return {}
    start = share_balancing(current, _window_shares(run, np.arange(steps)), targets, total)
    candidates = [dict(final)]
    for rows in (np.arange(steps // 2), np.arange(steps // 2, steps)):
        half = share_balancing(current, _window_shares(run, rows), targets, total)
        candidates.append(rescaled({t: final[t] * (half[t] / start[t] if start[t] > 0 else 1.0) for t in final},
                                   total))
    return {t: (min(c[t] for c in candidates), max(c[t] for c in candidates)) for t in final}


def _longer(spread: Mapping[str, tuple[float, float]], steps: int) -> Optional[int]:
    """Twice the profiled steps when a weight's spread is wider than a factor SPREAD_WIDE, else None."""
    wide = any(lo > 0 and hi / lo > SPREAD_WIDE or lo <= 0 < hi for lo, hi in spread.values())
    return 2 * steps if wide else None


def recommend(run: RunData, config: Config, shares: Mapping[str, float], dominant: Optional[str]) -> Recommendation:
    """The rule's decision over the profile's runs, with each run's shares and progress for the report."""
    found = evidence(run, config, shares, dominant)
    decision = decide(found, config)
    planned = config.check_steps > 0 and not (config.no_checks and config.no_verify)
    if found.in_force is None and run.meta.get("source") != MONITOR and planned:
        decision = dataclasses.replace(decision, reason=(
            "keep the weights in force: the profile ended before its runs from the same start (killed or "
            "crashed), so nothing was verified; profile again to judge the weights by outcome"))
    in_force = [r for r in run.extra.get("progress", [])]
    verified = [r for r in run.extra.get("verify", [])]
    chosen = (next((r for r in verified if r["weights"] == decision.weights), None)
              if decision.kind == REWEIGHT else None)
    spread = (_spread(run, decision.weights, found.weights, found.targets, sum(found.weights.values()))
              if chosen is not None else {})
    return dataclasses.replace(
        decision, in_force=_outcome(in_force[-1], found, config) if in_force else None,
        verification=_outcome(chosen, found, config) if chosen is not None else None,
        rounds=[_outcome(r, found, config) for r in verified], spread=spread,
        longer_steps=_longer(spread, config.steps))
