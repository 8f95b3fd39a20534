"""What the rule decides on and what it decides, as plain records: the evidence (the runs from the same start),
each candidate's assessment against the weights in force, and the recommendation with its kind."""
from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Optional, Sequence

from lossdiag.analyse.outcome import RunEnd
from lossdiag.checks.situations import OPPOSED, Situation
from lossdiag.record.kinds import TextEnum

class RecommendationKind(TextEnum):
    """What the rule recommends: keep the weights in force, reweight to verified weights, or a trade-off that no
    weight resolves."""

    KEEP = "keep"
    REWEIGHT = "reweight"
    TRADE_OFF = "trade-off"


KEEP, REWEIGHT, TRADE_OFF = RecommendationKind.KEEP, RecommendationKind.REWEIGHT, RecommendationKind.TRADE_OFF
PROBE = "probe"


@dataclasses.dataclass(frozen=True)
class Evidence:
    """What the rule decides on: the runs from the same start measured on the same evaluation batches.

    `start` is each term's loss on each evaluation batch before training; `in_force` the run under the weights in
    force (None when it could not be run: a Monitor); `alone` each term trained alone; `candidates` the candidate
    runs so far. `shares` are the terms' shares of the weighted shared gradient under the weights in force,
    `dominant` the term past the dominance threshold, `targets` the target shares of the share-balancing
    candidate, `user_targets` whether the user set them, `shared` the terms that reach shared parameters (None:
    all).
    """

    terms: list[str]
    weights: dict[str, float]
    on: str
    start: list[dict[str, float]]
    in_force: Optional[RunEnd]
    alone: dict[str, RunEnd]
    candidates: list[RunEnd]
    shares: dict[str, float]
    dominant: Optional[str]
    targets: dict[str, float]
    main: list[str] = dataclasses.field(default_factory=list)
    user_targets: bool = False
    shared: Optional[list[str]] = None


@dataclasses.dataclass(frozen=True)
class Assessment:
    """One verified candidate against the weights in force: each term's mean end, change and noise (CONTRACT
    section 4 `outcome.candidates`), each term's cost (outcome.cost, the measure the bound applies to), the clear
    gains, the costs paid (past the bound however noisy, or clear), the terms whose cost the floor scaled, whether
    it qualifies, and the verdict in words."""

    weights: dict[str, float]
    end: dict[str, Optional[float]]
    change: dict[str, Optional[float]]
    noise: dict[str, Optional[float]]
    gains: dict[str, float]
    costs: dict[str, float]
    qualifies: bool
    verdict: str
    cost: dict[str, Optional[float]] = dataclasses.field(default_factory=dict)
    floored: list[str] = dataclasses.field(default_factory=list)

    @property
    def shown_costs(self) -> dict[str, float]:
        return shown_costs(self.costs, self.cost, self.floored)

    @property
    def worst_cost(self) -> float:
        return max(self.costs.values(), default=0.0)

    @property
    def value(self) -> float:
        """The sum over terms of log(in force end / candidate end): how much better it serves all terms."""
        return -sum(math.log1p(max(c, -0.99)) for c in self.change.values() if c is not None)

    def to_dict(self) -> dict:
        return {"weights": self.weights, "end": self.end, "change": self.change, "noise": self.noise,
                "verdict": self.verdict}


@dataclasses.dataclass(frozen=True)
class Recommendation:
    """The decision and why. `pending` holds the candidates still to run from the same start (the driver runs
    them and asks again); `candidate` the best unverified weights where no run could be made (a Monitor).

    The display fields (`in_force_outcome`, `verification`, `rounds`, `spread`, `longer_steps`) are filled by
    the profile, which has the shares and progress of its runs; an engine-only decision leaves them empty.
    """

    kind: RecommendationKind
    weights: dict[str, float]
    reason: str
    on: str
    target_shares: dict[str, float]
    in_force_end: dict[str, Optional[float]]
    assessments: list[Assessment]
    chosen: Optional[int]
    situations: dict[str, Situation]
    main: list[str]
    max_cost: float
    tried: bool
    pending: list[dict[str, float]] = dataclasses.field(default_factory=list)
    candidate: Optional[dict[str, float]] = None
    in_force: Optional[object] = None
    verification: Optional[object] = None
    rounds: list = dataclasses.field(default_factory=list)
    spread: dict[str, tuple[float, float]] = dataclasses.field(default_factory=dict)
    longer_steps: Optional[int] = None

    @property
    def opposed(self) -> list[str]:
        return [t for t, s in self.situations.items() if s.name == OPPOSED]

    def outcome(self) -> Optional[dict]:
        """CONTRACT section 4 `outcome`: the yardstick every decision used, None when nothing was run."""
        if not self.in_force_end:
            return None
        return {"on": self.on, "in_force": self.in_force_end, "candidates": [a.to_dict() for a in self.assessments],
                "max_cost": self.max_cost, "chosen": self.chosen}


def shown_costs(costs: Mapping[str, float], values: Mapping[str, Optional[float]],
                floored: Sequence[str]) -> dict[str, float]:
    """The costs to print: those paid, and any rise whose measure the floor scaled (it differs from its change)."""
    return {**{t: values[t] for t in floored if (values.get(t) or 0.0) > 0}, **costs}
