"""The weightings worth a run from the same start: share balancing, the dominant term stepped down, each lagging
term stepped up, the helpers of a term that needs the others stepped up, the progress fixed point.

Every candidate keeps the sum of the weights in force (an SGD step keeps its size) and moves only the weights of
terms on shared parameters. Near-duplicates (every weight ratio within SAME_DECADES of a decade) are run once.
"""
from __future__ import annotations

import math
from typing import Mapping, Optional, Sequence

from lossdiag.checks.situations import BEHIND, NEEDS_OTHERS, OPPOSED, STARVED, Situation

MAX_FACTOR = 100.0
STEP_DECADES = (1, 2, 3)
STEPS_KEPT = 2
SAME_DECADES = 0.05
FULL_SHARE_GAP = 1e-6


def rescaled(weights: Mapping[str, float], total: float) -> dict[str, float]:
    """Weights scaled so that they sum to `total` (the sum of the weights in force: an SGD step keeps its size)."""
    current = sum(weights.values())
    factor = total / current if current > 0 and total > 0 else 1.0
    return {t: w * factor for t, w in weights.items()}


def moved(weights: Mapping[str, float], factors: Mapping[str, float], total: float) -> dict[str, float]:
    """The weights with a factor times their factor, rescaled so that all weights sum to `total`; the weights with
    no factor are left as they are, unless they alone reach `total`."""
    scaled = {t: w * factors[t] for t, w in weights.items() if t in factors}
    kept = {t: w for t, w in weights.items() if t not in factors}
    room = total - sum(kept.values())
    if not scaled or room <= 0:
        return rescaled({**kept, **scaled}, total)
    return {t: kept[t] if t in kept else w for t, w in {**weights, **rescaled(scaled, room)}.items()}


def share_balancing(current: Mapping[str, float], shares: Mapping[str, float], targets: Mapping[str, float],
                    total: float) -> dict[str, float]:
    """The weights in force moved so that the targeted terms' weighted gradients on shared parameters stand in the
    ratios of `targets`; the other terms keep their weight."""
    usable = {t: s for t, s in shares.items() if t in targets and s > 0 and current.get(t, 0.0) > 0}
    return moved(current, {t: targets[t] / s for t, s in usable.items()}, total)


def balance_factor(share: float, target: float) -> float:
    """The factor on one term's weight that takes its share from `share` to `target`, the others' weights fixed."""
    return target * (1.0 - share) / (share * (1.0 - target))


def stepped_down(current: Mapping[str, float], dominant: str, share: float, target: float,
                 total: float) -> list[dict[str, float]]:
    """The dominant term's weight divided by 10, 100, 1000 (the first STEPS_KEPT above its balance point), then
    at its balance point (none when it is the only term with a target): a log scale, since balance points lie
    decades away (FIELD_NOTES)."""
    if not share > 0.0 or current.get(dominant, 0.0) <= 0:
        return []
    balance = balance_factor(min(share, 1.0 - FULL_SHARE_GAP), target) if target < 1.0 else 0.0
    steps = [10.0 ** -d for d in STEP_DECADES if 10.0 ** -d > balance * 10 ** SAME_DECADES][:STEPS_KEPT]
    factors = steps + ([balance] if 0.0 < balance < 1.0 else [])
    return [rescaled({**current, dominant: current[dominant] * f}, total) for f in factors]


def stepped_up(current: Mapping[str, float], found: Mapping[str, Situation], total: float) -> list[dict[str, float]]:
    """Each starved, behind or opposed term's weight times 10 (the log step the other way), at most STEPS_KEPT."""
    lagging = [t for t, s in found.items() if s.name in (STARVED, BEHIND, OPPOSED) and current.get(t, 0.0) > 0]
    return [rescaled({**current, t: current[t] * 10.0}, total) for t in lagging[:STEPS_KEPT]]


def helpers_up(current: Mapping[str, float], found: Mapping[str, Situation], total: float) -> list[dict[str, float]]:
    """When a term learns only through the others (needs-others): every other term's weight times 10, one run."""
    if not any(s.name == NEEDS_OTHERS for s in found.values()):
        return []
    return [rescaled({t: w * (1.0 if found[t].name == NEEDS_OTHERS else 10.0) for t, w in current.items()}, total)]


def fixed_point(current: Mapping[str, float], found: Mapping[str, Situation], total: float) -> Optional[dict[str, float]]:
    """w_k * gain alone / gain combined (in the term's units, each factor within 1/100 .. 100) for the terms that do
    clearly worse combined than alone; None when there is none."""
    factors = {}
    for term, seen in found.items():
        if seen.name not in (STARVED, BEHIND) or current.get(term, 0.0) <= 0 or None in (seen.alone, seen.combined):
            continue
        gain_alone = seen.start - seen.alone
        gain_combined = max(seen.start - seen.combined, gain_alone / MAX_FACTOR)
        factors[term] = min(MAX_FACTOR, max(1.0 / MAX_FACTOR, gain_alone / gain_combined))
    return rescaled({t: w * factors.get(t, 1.0) for t, w in current.items()}, total) if factors else None


def decades(a: Mapping[str, float], b: Mapping[str, float]) -> float:
    """How far apart two weightings are, blind to a common scale: the spread of log10(a_k / b_k) over the terms
    (infinite where one weighs a term and the other does not)."""
    if set(a) != set(b) or any((a[t] > 0) != (b[t] > 0) for t in a):
        return math.inf
    logs = [math.log10(a[t] / b[t]) for t in a if a[t] > 0]
    return max(logs) - min(logs) if logs else 0.0


def same(a: Mapping[str, float], b: Mapping[str, float]) -> bool:
    """Whether two weightings are the same up to a common scale, within SAME_DECADES in every weight ratio."""
    return decades(a, b) <= SAME_DECADES


def distinct(weightings: Sequence[Mapping[str, float]], taken: Sequence[Mapping[str, float]]) -> list[dict[str, float]]:
    """The weightings in order, without those the same as an earlier one or as one in `taken`."""
    kept: list[dict[str, float]] = []
    for weights in weightings:
        if not any(same(weights, other) for other in [*taken, *kept]):
            kept.append(dict(weights))
    return kept
