"""Each term's situation, named by what the runs from the same start measured on the evaluation batches.

- `starved`: goes down alone, clearly less combined (at most starved_ratio of the alone gain, in its units);
- `behind`: goes down alone and does clearly worse combined than alone (by min_gain or more), yet not starved;
- `opposed`: gets worse than its start under the weights in force while the others train, beyond noise and by
  more than it gains trained alone (a KL term that starts near 0 and rises, not a drowned term that drifts up a
  little): a trade-off, never "rescued" by a weight. A term that falls is never opposed, even in a pair whose
  gradients clearly oppose (a VAE's reconstruction): it is starved or behind when it does clearly worse than
  alone, and the rule finds the trade-off by the candidates' costs;
- `needs-others`: does not go down alone but does combined: it needs the others, it is not broken;
- `stalled`: goes down neither alone nor combined;
- `learns`: goes down combined, and no clearly worse than alone.

Every "clearly" is beyond z = check_noise_z paired standard errors. The names are labels for the reader and the
trigger to try candidates; the decision itself is the rule's, over the candidates' outcomes.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Collection, Mapping, Optional, Sequence

from lossdiag.analyse.outcome import PerBatch, RunEnd, change
from lossdiag.config import Config
from lossdiag.record.kinds import TextEnum



class SituationName(TextEnum):
    """A term's situation after the runs from the same start (the module's docstring says each)."""

    STARVED = "starved"
    BEHIND = "behind"
    OPPOSED = "opposed"
    NEEDS_OTHERS = "needs-others"
    STALLED = "stalled"
    LEARNS = "learns"


STARVED, BEHIND, OPPOSED, NEEDS_OTHERS, STALLED, LEARNS = SituationName


def gain_kept(start: Optional[float], alone: Optional[float], combined: Optional[float]) -> Optional[float]:
    """The part of its alone gain a term makes under the weights in force, (start - combined) / (start - alone), in
    its own units; None where it gained nothing alone or a figure is missing. The starved rule: at most
    starved_ratio (a term that makes no progress combined counts as keeping none of its gain)."""
    if start is None or alone is None or not start - alone > 0:
        return None
    return (start - combined) / (start - alone) if combined is not None else 0.0


@dataclasses.dataclass(frozen=True)
class Situation:
    """One term: its situation, its loss at the start, at the end alone and under the weights in force (means on
    the evaluation batches, in its units), and the end under the weights in force against the end alone."""

    term: str
    name: SituationName
    start: Optional[float]
    alone: Optional[float]
    combined: Optional[float]
    against_alone: Optional[float]
    against_alone_noise: Optional[float]

    @property
    def to_gain(self) -> bool:
        """Whether another weighting could serve the term: starved, behind or opposed."""
        return self.name in (STARVED, BEHIND, OPPOSED)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def lifted_out_of_starvation(seen: Situation, end: Optional[float], starved_ratio: float) -> bool:
    """Whether a starved term, ending at `end` under other weights, keeps more than starved_ratio of its gain alone
    there: rescued, not merely helped (the verdict says which)."""
    kept = gain_kept(seen.start, seen.alone, end)
    return end is not None and kept is not None and kept > starved_ratio


def situation(term: str, start: PerBatch, in_force: RunEnd, alone: Optional[RunEnd], config: Config,
              judged: bool = True) -> Situation:
    """Name one term's situation from the start, its run alone (None when it was not run) and the combined run.
    A term not `judged` (it reaches no shared parameter, or the combined run skipped a non-finite update) is only
    `learns`, `needs-others` or `stalled`."""
    z = config.check_noise_z
    combined = change(in_force.end, start, term)
    alone_change = change(alone.end, start, term) if alone is not None else None
    against = change(in_force.end, alone.end, term) if alone is not None else None
    learns_combined = combined.clear(z) < 0
    learns_alone = alone_change is not None and alone_change.clear(z) < 0
    rise = (combined.end - combined.reference) if combined.end is not None else math.inf
    gain_alone = (combined.reference - alone_change.end) if learns_alone else 0.0
    if combined.clear(z) > 0 and rise > gain_alone:
        name = OPPOSED
    elif learns_alone and against is not None and against.clear(z) > 0 and (against.change or 0) >= config.min_gain:
        kept = gain_kept(combined.reference, alone_change.end, combined.end)
        name = STARVED if kept is not None and kept <= config.starved_ratio else BEHIND
    elif learns_combined:
        name = LEARNS if learns_alone or alone is None else NEEDS_OTHERS
    else:
        name = STALLED if alone is not None and not learns_alone else LEARNS
    if not judged and name in (STARVED, BEHIND, OPPOSED):
        name = LEARNS if learns_combined else STALLED
    return Situation(term, name, combined.reference, alone_change.end if alone_change is not None else None,
                     combined.end, against.change if against is not None else None,
                     against.noise if against is not None else None)


def situations(terms: Sequence[str], start: PerBatch, in_force: RunEnd, alone: Mapping[str, RunEnd],
               config: Config, shared: Optional[Collection[str]] = None) -> dict[str, Situation]:
    """Every term's situation, in the terms' order; `shared` the terms on shared parameters (all when None): only
    they, and only when the combined run applied every update, can be starved, behind or opposed."""
    return {t: situation(t, start, in_force, alone.get(t), config,
                         (shared is None or t in shared) and not in_force.skipped_updates) for t in terms}
