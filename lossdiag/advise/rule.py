"""The one rule, shared by the profile, the sweep and find_weights: decide over verified runs from the same start.

`reweight` only for a verified candidate that helps (some term, not an opposed one, clearly better by at least
min_gain on the outcome, and all terms better served on the whole: a sum of log end-loss ratios of at least
min_gain) while no other term pays more than max_cost and no `main` term pays anything beyond noise. What a term
pays is outcome.cost: its end loss's rise over the larger of its end under the weights in force and FLOOR_FRACTION
(0.1) of its start loss (a term near its floor pays for what it gives back of what it learned, not +148% for 0.015);
the bound applies to that measure however noisy, a cost within the bound counts only beyond noise. Among the
qualifying candidates the one that serves the terms best (the largest sum of log end-loss ratios), and of those
within min_gain of it the cheapest (smallest worst cost). None qualifies: `trade-off` when a
candidate's clear gain for a starved, opposed or main term costs other terms, else `keep`.

`decide` is pure over an Evidence; the candidates it still wants run come back in `pending` (the driver runs them
from the same start, adds them to the evidence and asks again), so a record of the runs rebuilds the decision.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Optional, Sequence

from lossdiag.advise.candidates import (decades, distinct, fixed_point, same, share_balancing, stepped_down,
                                       helpers_up, stepped_up)
from lossdiag.advise.decision import (KEEP, REWEIGHT, TRADE_OFF, Assessment, Evidence, Recommendation,
                                     shown_costs)
from lossdiag.analyse.outcome import FLOOR_FRACTION, RunEnd, changes, cost, mean_of
from lossdiag.checks.situations import BEHIND, NEEDS_OTHERS, OPPOSED, STARVED, Situation, situations
from lossdiag.config import Config


def _pct(value: float) -> str:
    return f"{value:+.1%}" if abs(value) < 10 else f"{value * 100:+.3g}%"


def _terms_text(values: Mapping[str, float], floored: Sequence[str] = ()) -> str:
    """Terms and their changes or costs; a cost the floor scaled says so (of FLOOR_FRACTION x its start loss)."""
    return ", ".join(f"'{t}' {_pct(v)}" + (f" of {FLOOR_FRACTION:g} x its start" if t in floored else "")
                     for t, v in values.items())


def bound_text(max_cost: float) -> str:
    """The bound as the rule applies it, for the lines that print it."""
    return (f"{max_cost:.0%} of its end under the weights in force (or of {FLOOR_FRACTION:g} x its start loss where "
            f"that is larger: a term near its floor)")


def assess(run: RunEnd, in_force: RunEnd, found: Mapping[str, Situation], main: Sequence[str],
           config: Config) -> Assessment:
    """A candidate run against the run under the weights in force, on the same evaluation batches."""
    z = config.check_noise_z
    compared = changes(run.end, in_force.end, list(found))
    gains = {t: -c.change for t, c in compared.items()
             if c.clear(z) < 0 and -c.change >= config.min_gain and found[t].name != OPPOSED}
    paid = {t: cost(c, found[t].start) for t, c in compared.items()}
    values = {t: p.value if p is not None else None for t, p in paid.items()}
    floored = [t for t, p in paid.items() if p is not None and p.floored]
    costs = {t: p.value for t, p in paid.items() if p is not None and p.value > 0
             and (p.clear(z) or p.value > config.max_cost)}
    costs.update({t: math.inf for t, c in compared.items() if c.end is None and c.reference is not None})
    main_pays = {t: costs[t] for t in main if t in costs and (paid[t] is None or paid[t].clear(z))}
    over = {t: v for t, v in costs.items() if v > config.max_cost}
    net = -sum(math.log1p(max(c.change, -0.99)) for c in compared.values() if c.change is not None)
    qualifies = bool(gains) and not main_pays and not over and net >= config.min_gain
    if main_pays:
        why = f"main {_terms_text(main_pays, floored)} would pay"
    elif over:
        why = f"costs {_terms_text(over, floored)} (bound {config.max_cost:.0%})"
    elif not gains:
        why = "no term clearly better"
    elif not qualifies:
        why = "gains and costs about even" + (f" (costs {_terms_text(costs, floored)})" if costs else "")
    else:
        shown = shown_costs(costs, values, floored)
        why = "qualifies" + (f" (costs {_terms_text(shown, floored)}, bound {config.max_cost:.0%})" if shown else "")
    if gains:
        better = _terms_text({t: -g for t, g in gains.items()})
        why = f"{better}; {why}" if not qualifies else f"{why}: {better}"
    return Assessment(dict(run.weights), {t: c.end for t, c in compared.items()},
                      {t: c.change for t, c in compared.items()}, {t: c.noise for t, c in compared.items()},
                      gains, costs, qualifies, why, values, floored)


def _trade_off_text(gaining: Sequence[Assessment], main: Sequence[str], config: Config) -> str:
    """Why the candidates that serve a term were not taken: the main terms would pay (their least measured
    change among those candidates) when every one costs a main term, else the other terms' costs past the bound."""
    main_costs = [({t: a.costs[t] for t in main if t in a.costs}, a.floored) for a in gaining]
    if main and all(paid for paid, _ in main_costs):
        least, floored = min(main_costs, key=lambda pair: max(pair[0].values()))
        return (f"main {_terms_text(least, floored)} would pay (the least among the candidates that serve a term); "
                "choose by the metric that matters with `lossdiag sweep --metric`")
    declare = "" if main else ", or declare the terms you care most about (`main`)"
    return (f"the gains cost other terms more than the bound ({config.max_cost:.0%}); choose by the metric "
            f"that matters with `lossdiag sweep --metric`{declare}")


def planned(evidence: Evidence, found: Mapping[str, Situation], config: Config) -> list[dict[str, float]]:
    """The first candidates: share balancing, the dominant term stepped down on a log scale, each lagging term
    stepped up, the helpers of a term that needs the others stepped up, the fixed point (near-duplicates run
    once)."""
    total = sum(evidence.weights.values())
    first = [share_balancing(evidence.weights, evidence.shares, evidence.targets, total)]
    dominant = evidence.dominant
    if dominant is not None and dominant in evidence.targets:
        first += stepped_down(evidence.weights, dominant, evidence.shares[dominant], evidence.targets[dominant],
                              total)
    first += stepped_up(evidence.weights, found, total) + helpers_up(evidence.weights, found, total)
    point = fixed_point(evidence.weights, found, total)
    first += [point] if point is not None else []
    return distinct(first, [evidence.weights])


def halfway(weights: Mapping[str, float], towards: Mapping[str, float]) -> dict[str, float]:
    """The geometric midpoint of two weightings (each weight), scaled to the sum of `weights`."""
    mid = {t: math.sqrt(weights[t] * towards[t]) if weights[t] > 0 and towards[t] > 0 else weights[t]
           for t in weights}
    total, current = sum(weights.values()), sum(mid.values())
    return {t: w * total / current for t, w in mid.items()} if current > 0 else dict(weights)


def _to_gain(assessment: Assessment, found: Mapping[str, Situation], main: Sequence[str], config: Config) -> bool:
    """Whether a candidate clearly serves a term that had much to gain: a starved or opposed one, or a main one (a
    term merely behind, such as an auxiliary head by design, trades nothing worth naming)."""
    z = config.check_noise_z
    for term, change in assessment.change.items():
        noise = assessment.noise.get(term)
        clear = change is not None and noise is not None and change < -z * noise and -change >= config.min_gain
        if clear and (found[term].name in (STARVED, OPPOSED) or term in main):
            return True
    return False


def _rescue(evidence: Evidence, among: Sequence[RunEnd], config: Config) -> Optional[dict[str, float]]:
    """The progress fixed point taken again from the run (of `among`) that served the starved and behind terms
    best: that run's weights, each term still lagging there times its gain alone over its gain there; the
    correction of a candidate that moved the right way but not far enough (None when none lags there)."""
    found = situations(evidence.terms, evidence.start, evidence.in_force, evidence.alone, config, evidence.shared)
    lagging = [t for t, s in found.items() if s.name in (STARVED, BEHIND)]
    reference = evidence.in_force.mean
    usable = [r for r in among
              if all(r.mean.get(t, math.nan) > 0 and reference.get(t, math.nan) > 0 for t in lagging)]
    if not lagging or not usable:
        return None
    best = min(usable, key=lambda r: sum(math.log(r.mean[t] / reference[t]) for t in lagging))
    under = situations(evidence.terms, evidence.start, best, evidence.alone, config, evidence.shared)
    return fixed_point(best.weights, under, sum(evidence.weights.values()))


def _corrections(evidence: Evidence, assessments: Sequence[Assessment], found: Mapping[str, Situation],
                 config: Config) -> list[dict[str, float]]:
    """At most verify_rounds more runs in all. When a candidate qualifies but leaves a term lagging, the progress
    fixed point taken again from the best qualifying run for the lagging terms. When none qualifies: where some
    serve a starved, opposed or main term at too high a cost, the geometric midpoint of the cheapest of them and
    the nearest run that costs within the bound (the weights in force at worst), a cheaper step the same way; and
    the fixed point taken again from the run that served the lagging terms best."""
    left = config.verify_rounds - (len(evidence.candidates) - len(planned(evidence, found, config)))
    if left <= 0:
        return []
    qualifying = [r for r, a in zip(evidence.candidates, assessments) if a.qualifies]
    if qualifying:
        rescue = _rescue(evidence, qualifying, config)
        return distinct([rescue], [evidence.weights, *(r.weights for r in evidence.candidates)]) if rescue else []
    steps = []
    costly = [a for a in assessments if _to_gain(a, found, evidence.main, config)]
    if costly:
        cheapest = min(costly, key=lambda a: a.worst_cost)
        within = [evidence.weights] + [a.weights for a in assessments if a.worst_cost <= config.max_cost]
        steps.append(halfway(min(within, key=lambda w: decades(w, cheapest.weights)), cheapest.weights))
    rescue = _rescue(evidence, evidence.candidates, config)
    steps += [rescue] if rescue is not None else []
    return distinct(steps, [evidence.weights, *(r.weights for r in evidence.candidates)])[:left]


def choose(assessments: Sequence[Assessment], config: Config) -> Optional[int]:
    """The qualifying candidate that serves the terms best; of those within min_gain of it, the cheapest."""
    qualifying = [k for k, a in enumerate(assessments) if a.qualifies]
    if not qualifying:
        return None
    best = max(assessments[k].value for k in qualifying)
    close = [k for k in qualifying if assessments[k].value >= best - config.min_gain]
    return min(close, key=lambda k: (assessments[k].worst_cost, -assessments[k].value))


@dataclasses.dataclass(frozen=True)
class Judgement:
    """The rule applied to runs already made: each term's situation, each candidate's assessment, the choice."""

    situations: dict[str, Situation]
    assessments: list[Assessment]
    chosen: Optional[int]


def judge(terms: Sequence[str], start: list[dict[str, float]], in_force: RunEnd, alone: Mapping[str, RunEnd],
          candidates: Sequence[RunEnd], main: Sequence[str], config: Config,
          shared: Optional[Sequence[str]] = None) -> Judgement:
    """Situations from the start, each term alone and the weights in force; each candidate assessed against the
    weights in force; the chosen one (None when none qualifies). The profile and the sweep both decide by this."""
    found = situations(terms, start, in_force, alone, config, shared)
    assessments = [assess(r, in_force, found, main, config) for r in candidates]
    return Judgement(found, assessments, choose(assessments, config))


def _matching(runs: Sequence[RunEnd], weights: Mapping[str, float]) -> Optional[RunEnd]:
    return next((r for r in runs if same(r.weights, weights)), None)


def decide(evidence: Evidence, config: Config) -> Recommendation:
    """keep / reweight / trade-off from the evidence, or the candidates still to run (`pending`)."""
    base = dict(on=evidence.on, target_shares=evidence.targets, main=list(evidence.main), max_cost=config.max_cost)
    if evidence.in_force is None:
        candidate = planned(evidence, {}, config)[:1] if evidence.dominant or evidence.user_targets else []
        why = ("not verified: no run from the same start could be made here; verify the candidate with "
               "lossdiag.profile, find_weights or `lossdiag profile --weights`" if candidate else
               "no term dominates, no target shares are set and no run from the same start was made to judge by "
               "outcome")
        return Recommendation(KEEP, dict(evidence.weights), f"keep the weights in force: {why}", in_force_end={},
                              assessments=[], chosen=None, situations={}, tried=False,
                              candidate=candidate[0] if candidate else None, **base)
    found = situations(evidence.terms, evidence.start, evidence.in_force, evidence.alone, config, evidence.shared)
    in_force_end = mean_of(evidence.in_force.end)
    base.update(in_force_end=in_force_end, situations=found)
    trigger = evidence.dominant is not None or any(s.to_gain or s.name == NEEDS_OTHERS for s in found.values())
    if not trigger:
        return Recommendation(KEEP, dict(evidence.weights), "keep the weights in force: no term dominates, none does "
                              "clearly worse combined than alone, none needs the others and none is opposed: "
                              "nothing to try",
                              assessments=[], chosen=None, tried=False, **base)
    wanted = planned(evidence, found, config)
    pending = [w for w in wanted if _matching(evidence.candidates, w) is None]
    if pending and config.no_verify:
        return Recommendation(KEEP, dict(evidence.weights), (
            "keep the weights in force: the candidates were not verified (--no-verify); profile again without it, "
            "or with --weights set to the candidate, to judge them by outcome"), assessments=[], chosen=None,
            tried=False, candidate=pending[0], **base)
    if pending:
        return Recommendation(KEEP, dict(evidence.weights), "verifying", assessments=[], chosen=None, tried=True,
                              pending=pending, **base)
    judged = judge(evidence.terms, evidence.start, evidence.in_force, evidence.alone, evidence.candidates,
                   evidence.main, config, evidence.shared)
    assessments = judged.assessments
    more = [w for w in _corrections(evidence, assessments, found, config) if _matching(evidence.candidates, w) is None]
    if more:
        return Recommendation(KEEP, dict(evidence.weights), "verifying", assessments=assessments, chosen=None,
                              tried=True, pending=more, **base)
    chosen = judged.chosen
    tried = (f"{len(assessments)} candidate{'s' if len(assessments) != 1 else ''} verified from the same start over "
             f"{config.check_steps} steps on the {evidence.on} batches")
    if chosen is not None:
        picked = assessments[chosen]
        shown = picked.shown_costs
        worst = {t: v for t, v in shown.items() if v == max(shown.values(), default=0.0)}
        cost = (f"worst cost {_terms_text(worst, picked.floored)}" if shown else "no term pays beyond noise")
        main = f"; main {', '.join(repr(t) for t in evidence.main)} pays nothing" if evidence.main else ""
        return Recommendation(REWEIGHT, dict(picked.weights), (
            f"{tried}: it serves {_terms_text({t: -g for t, g in picked.gains.items()})} on the outcome; {cost} "
            f"(bound {config.max_cost:.0%}){main}"), assessments=assessments, chosen=chosen, tried=True, **base)
    gaining = [a for a in assessments if _to_gain(a, found, evidence.main, config)]
    if gaining:
        why = _trade_off_text(gaining, evidence.main, config)
        return Recommendation(TRADE_OFF, dict(evidence.weights), f"{tried}: {why}", assessments=assessments, chosen=None, tried=True, **base)
    design = (f"; '{evidence.dominant}' dominates by design" if evidence.dominant is not None else "")
    return Recommendation(KEEP, dict(evidence.weights), (
        f"keep the weights in force: {tried}, none serves a term clearly better without costing another more than "
        f"{config.max_cost:.0%}{design}"), assessments=assessments, chosen=None, tried=True, **base)

