"""The recommendation: keep the weights, reweight (verified by a run), or a trade-off, all read from the records.

Equal gradient norms are not the goal: what users want is that every term they care about makes progress, and
the main one no less than before. So the weights start at `target_shares` of the shared gradient (only for
terms that progress when trained alone: a term's gradient that is small because it carries no signal is no
reason to raise its weight) and are then corrected on measured progress, the fixed point
w_k <- w_k * alone_k / combined_k. Each candidate is verified by a run from the same start; one that leaves a
term starved or costs a term much of its progress is corrected (bounded rounds) and never printed as advice.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Optional, Sequence

import numpy as np

from lossdiag.analyse.run import RunData, finite_median
from lossdiag.checks.starved import is_starved
from lossdiag.config import Config

KEEP, REWEIGHT, TRADE_OFF = "keep", "reweight", "trade-off"
SPREAD_WIDE = 2.0
MAX_FACTOR = 100.0


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What one run from the start under `weights` measured on the probe batches."""

    weights: dict[str, float]
    shares: dict[str, float]
    applied_shares: dict[str, float]
    progress: dict[str, Optional[float]]
    noise: dict[str, Optional[float]]
    starved: list[str]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Recommendation:
    """The advice and why; `pending` holds weights still to verify (the caller runs them and asks again)."""

    kind: str
    weights: dict[str, float]
    reason: str
    target_shares: dict[str, float]
    in_force: Optional[Outcome]
    verification: Optional[Outcome]
    rounds: list[Outcome]
    spread: dict[str, tuple[float, float]]
    longer_steps: Optional[int]
    pending: Optional[dict[str, float]] = None


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


def _outcome(record: dict, alone: Mapping[str, float], config: Config) -> Outcome:
    progress = dict(record.get("progress", {}))
    starved = [t for t, a in alone.items() if is_starved(a, progress.get(t), config)]
    return Outcome(dict(record["weights"]), dict(record.get("shares", {})), dict(record.get("applied_shares", {})),
                   progress, dict(record.get("noise", {})), starved)


def _alone(run: RunData, config: Config) -> dict[str, float]:
    """Progress alone of the terms on shared parameters that go down clearly alone (at least starved_min_drop):
    the ones that can be starved, and the only ones whose weight is moved."""
    return {r["term"]: r["relative_drop"] for r in run.extra.get("check", [])
            if r.get("status") == "pass" and (r.get("relative_drop") or 0.0) >= config.starved_min_drop
            and r["term"] in run.shared_terms}


def _window_shares(run: RunData, rows: np.ndarray) -> dict[str, float]:
    """Shares of the median weighted norms over some recorded steps, among the terms on shared parameters."""
    medians = {t: finite_median((np.abs(run.weights) * run.norms)[rows, k]) for k, t in enumerate(run.terms)
               if t in run.shared_terms}
    total = sum(v for v in medians.values() if math.isfinite(v))
    return {t: v / total for t, v in medians.items() if math.isfinite(v) and total > 0}


def _rescaled(weights: Mapping[str, float], total: float) -> dict[str, float]:
    """Weights scaled so that they sum to `total` (the sum of the weights in force: an SGD step keeps its size)."""
    current = sum(weights.values())
    factor = total / current if current > 0 and total > 0 else 1.0
    return {t: w * factor for t, w in weights.items()}


def _moved(weights: Mapping[str, float], factors: Mapping[str, float], total: float) -> dict[str, float]:
    """The weights with a factor times their factor, rescaled so that all weights sum to `total`; the weights with
    no factor (terms that do not go down clearly alone) are left as they are, unless they alone reach `total`."""
    moved = {t: w * factors[t] for t, w in weights.items() if t in factors}
    kept = {t: w for t, w in weights.items() if t not in factors}
    room = total - sum(kept.values())
    if not moved or room <= 0:
        return _rescaled({**kept, **moved}, total)
    return {t: kept[t] if t in kept else w for t, w in {**weights, **_rescaled(moved, room)}.items()}


def start_weights(current: Mapping[str, float], shares: Mapping[str, float], targets: Mapping[str, float],
                  total: float) -> dict[str, float]:
    """The weights in force moved so that the targeted terms' weighted gradients on shared parameters stand in the
    ratios of `targets`; the other terms keep their weight."""
    usable = {t: s for t, s in shares.items() if t in targets and s > 0 and current.get(t, 0.0) > 0}
    return _moved(current, {t: targets[t] / s for t, s in usable.items()}, total)


def _bounded(factor: float) -> float:
    return min(MAX_FACTOR, max(1.0 / MAX_FACTOR, factor))


def corrected(rounds: Sequence[Outcome], alone: Mapping[str, float], targets: Optional[Mapping[str, float]],
              total: float) -> dict[str, float]:
    """One step of the fixed point on progress from the last round: w_k * alone_k / measured_k for the terms that
    go down clearly alone, times target_k / share_k where the user set target shares (each factor within
    1/100 .. 100); the other terms keep their weight. A factor that reverses the previous round's move of a term
    is halved in log space, so an overshoot settles instead of swinging."""
    outcome = rounds[-1]
    previous = rounds[-2].weights if len(rounds) > 1 else None
    factors = {}
    for term, drop in alone.items():
        measured = outcome.progress.get(term)
        floor = drop / MAX_FACTOR
        factors[term] = _bounded(drop / max(measured if measured is not None else floor, floor))
    for term, target in (targets or {}).items():
        share = outcome.shares.get(term)
        if share is not None and share > 0:
            factors[term] = _bounded(factors.get(term, 1.0) * target / share)
    if previous is not None:
        for term, factor in factors.items():
            moved = outcome.weights.get(term, 0.0) / previous[term] if previous.get(term) else 1.0
            if (factor - 1.0) * (moved - 1.0) < 0:
                factors[term] = math.sqrt(factor)
    return _moved(outcome.weights, factors, total)


def off_target(shares: Mapping[str, float], targets: Optional[Mapping[str, float]], tolerance: float) -> list[str]:
    """The terms whose share is further than `tolerance` from the target the user set (none when none is set)."""
    return [t for t, target in (targets or {}).items() if abs(shares.get(t, 0.0) - target) > tolerance]


def problems(outcome: Outcome, in_force: Outcome, alone: Mapping[str, float], config: Config,
             targets: Optional[Mapping[str, float]] = None) -> list[str]:
    """Why a verified candidate is not advice: a term left starved, one that loses more than verify_max_loss of
    the progress it made under the weights in force (beyond the noise) without having been starved there, or a
    share further than share_tolerance from the target the user set."""
    found = [f"'{t}' stays starved ({_pct(outcome.progress.get(t))} against {_pct(alone[t])} alone)"
             for t in outcome.starved]
    found += [f"'{t}' holds {outcome.shares.get(t, 0.0):.2f} of the shared gradient, not {targets[t]:.2f}"
              for t in off_target(outcome.shares, targets, config.share_tolerance)]
    for term, before in in_force.progress.items():
        after, noise = outcome.progress.get(term), outcome.noise.get(term) or 0.0
        if term in in_force.starved or before is None or before <= 0:
            continue
        if after is None or after < before * (1 - config.verify_max_loss) - config.check_noise_z * noise:
            found.append(f"'{term}' would make {_pct(after)} progress instead of {_pct(before)}")
    return found


def _pct(value: Optional[float]) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.0%}"


def _spread(run: RunData, final: Mapping[str, float], start: Mapping[str, float], current: Mapping[str, float],
            targets: Mapping[str, float], total: float) -> dict[str, tuple[float, float]]:
    """Each recommended weight from the first and the second half of the recorded window (the same correction
    applied to both): the range of the three values."""
    steps = len(run.grad_steps)
    if steps < 2:
        return {}
    candidates = [dict(final)]
    for rows in (np.arange(steps // 2), np.arange(steps // 2, steps)):
        half = start_weights(current, _window_shares(run, rows), targets, total)
        moved = {t: half[t] * (final[t] / start[t] if start[t] > 0 else 1.0) for t in final}
        candidates.append(_rescaled(moved, total))
    return {t: (min(c[t] for c in candidates), max(c[t] for c in candidates)) for t in final}


def _longer(spread: Mapping[str, tuple[float, float]], steps: int) -> Optional[int]:
    """Twice the profiled steps when a weight's spread is wider than a factor SPREAD_WIDE, else None."""
    wide = any(lo > 0 and hi / lo > SPREAD_WIDE or lo <= 0 < hi for lo, hi in spread.values())
    return 2 * steps if wide else None


def recommend(run: RunData, config: Config, shares: Mapping[str, float], dominant: Optional[str],
              opposed: Sequence[tuple[str, str]]) -> Recommendation:
    """Decide keep / reweight / trade-off from the records; `pending` asks for one more verification run."""
    current = {t: float(run.meta.get("weights", {}).get(t, 1.0)) for t in run.terms}
    total = sum(current.values())
    alone = _alone(run, config)
    in_force_records = run.extra.get("progress", [])
    in_force = _outcome(in_force_records[-1], alone, config) if in_force_records else None
    learners = [t for t in run.shared_terms if t in alone] if run.extra.get("check") else list(run.shared_terms)
    targets = resolve_targets(learners, config.target_shares)
    base = dict(kind=KEEP, weights=current, target_shares=targets, in_force=in_force, verification=None,
                rounds=[], spread={}, longer_steps=None)
    if opposed:
        pairs = ", ".join(f"'{a}' vs '{b}'" for a, b in opposed)
        return Recommendation(**{**base, "kind": TRADE_OFF}, reason=(
            f"{pairs} pull the shared parameters in opposite directions: no weight balances them; choose with "
            f"`lossdiag sweep` or by your metric"))
    user_targets = targets if config.target_shares else None
    starved = in_force.starved if in_force is not None and alone else []
    judged = bool(run.extra.get("check")) and in_force is not None
    if not starved and not off_target(shares, user_targets, config.share_tolerance) and (judged or dominant is None):
        why = "no term is starved" if judged else "no term dominates (the checks did not run to judge by outcome)"
        if config.target_shares:
            why += f" and the shares are within {config.share_tolerance:g} of target_shares"
        elif dominant is not None:
            why += f": '{dominant}' dominates by design, which is not a fault"
        return Recommendation(**base, reason=f"keep the weights in force: {why}")
    start = start_weights(current, shares, targets, total)
    spread = _spread(run, start, start, current, targets, total)
    if config.no_verify or in_force is None:
        why = ("not verified (--no-verify): profile again with --weights to confirm" if config.no_verify else
               "not verified: a Monitor's run cannot be rerun from its start; confirm with lossdiag profile --weights")
        return Recommendation(**{**base, "kind": REWEIGHT, "weights": start, "spread": spread,
                                 "longer_steps": _longer(spread, config.steps)}, reason=why)
    rounds = [_outcome(r, alone, config) for r in run.extra.get("verify", [])]
    candidate = start
    for number, outcome in enumerate(rounds, 1):
        found = problems(outcome, in_force, alone, config, user_targets)
        if not found:
            spread = _spread(run, outcome.weights, start, current, targets, total)
            rescued = f", which rescues {', '.join(repr(t) for t in starved)}" if starved else ""
            return Recommendation(**{**base, "kind": REWEIGHT, "weights": outcome.weights, "verification": outcome,
                                     "rounds": rounds, "spread": spread,
                                     "longer_steps": _longer(spread, config.steps)},
                                  reason=f"verified by a run from the same start, round {number}{rescued}")
        candidate = corrected(rounds[:number], alone, user_targets, total)
    if len(rounds) <= config.verify_rounds:
        return Recommendation(**{**base, "rounds": rounds}, reason="verifying", pending=candidate)
    why = "; ".join(problems(rounds[-1], in_force, alone, config, user_targets))
    kind = TRADE_OFF if starved else KEEP
    return Recommendation(**{**base, "kind": kind, "rounds": rounds}, reason=(
        f"no weighting found in {len(rounds)} verified rounds serves every term ({why}): "
        + ("the terms trade off; choose with `lossdiag sweep` or by your metric" if starved else
           "keep the weights in force")))
