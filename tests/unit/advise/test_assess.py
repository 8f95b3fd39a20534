"""The rule's steps on hand-made run ends: a candidate assessed against the weights in force (gains, costs, the
bound, main terms, the net gain), the choice among qualifying candidates, and the geometric midpoint it tries when
a gain costs too much. Expected numbers are worked out here from the changes laid out."""
from __future__ import annotations

import math

import pytest

from lossdiag.advise.candidates import decades
from lossdiag.analyse.outcome import Change, RunEnd, cost
from lossdiag.advise.decision import Assessment
from lossdiag.advise.rule import assess, choose, halfway
from lossdiag.checks.situations import LEARNS, OPPOSED, STARVED, Situation
from lossdiag.config import Config

CONFIG = Config(min_gain=0.05, max_cost=0.1, check_noise_z=3.0)
JITTER = (0.99, 1.01, 1.0, 0.995, 1.005, 1.0, 0.998, 1.002)
IN_FORCE = RunEnd({"a": 1.0, "b": 1.0}, [{"a": 1.0 * j, "b": 2.0 * j} for j in JITTER])


def candidate(a: float, b: float) -> RunEnd:
    """A run whose end losses are the in-force ones times (1 + a) and (1 + b), batch by batch."""
    return RunEnd({"a": 2.0, "b": 1.0}, [{"a": e["a"] * (1 + a), "b": e["b"] * (1 + b)} for e in IN_FORCE.end])


def found(a: str = STARVED, b: str = LEARNS) -> dict[str, Situation]:
    return {"a": Situation("a", a, 1.5, 0.5, 1.0, None, None), "b": Situation("b", b, 3.0, 1.0, 2.0, None, None)}


def test_a_clear_gain_at_a_cost_within_the_bound_qualifies():
    judged = assess(candidate(-0.2, 0.03), IN_FORCE, found(), [], CONFIG)
    assert judged.change == pytest.approx({"a": -0.2, "b": 0.03})
    assert judged.gains == pytest.approx({"a": 0.2}) and judged.costs == pytest.approx({"b": 0.03})
    assert judged.qualifies and judged.verdict.startswith("qualifies")
    assert judged.value == pytest.approx(-math.log(0.8) - math.log(1.03))
    assert judged.worst_cost == pytest.approx(0.03)
    assert judged.end == pytest.approx({"a": 0.8, "b": 2.06})


def test_a_cost_past_the_bound_does_not_qualify_and_says_so():
    judged = assess(candidate(-0.2, 0.15), IN_FORCE, found(), [], CONFIG)
    assert not judged.qualifies and judged.costs == pytest.approx({"b": 0.15})
    assert "bound 10%" in judged.verdict and "'b' +15.0%" in judged.verdict


def test_a_main_term_pays_nothing_beyond_noise():
    assert assess(candidate(-0.2, 0.03), IN_FORCE, found(), ["a"], CONFIG).qualifies
    judged = assess(candidate(-0.2, 0.03), IN_FORCE, found(), ["b"], CONFIG)
    assert not judged.qualifies and "main 'b' +3.0% would pay" in judged.verdict


def test_a_gain_below_min_gain_is_no_gain():
    judged = assess(candidate(-0.04, 0.0), IN_FORCE, found(), [], CONFIG)
    assert judged.gains == {} and not judged.qualifies and "no term clearly better" in judged.verdict


def test_an_opposed_terms_gain_is_not_counted():
    judged = assess(candidate(-0.2, 0.0), IN_FORCE, found(a=OPPOSED), [], CONFIG)
    assert judged.gains == {} and not judged.qualifies


def test_gains_that_costs_undo_in_the_sum_of_log_ratios_do_not_qualify():
    # -log(0.94) - log(1.05) = 0.013, below min_gain 0.05, though each cost is within the bound
    judged = assess(candidate(-0.06, 0.05), IN_FORCE, found(), [], CONFIG)
    assert judged.gains and judged.worst_cost <= CONFIG.max_cost
    assert judged.value == pytest.approx(-math.log(0.94) - math.log(1.05))
    assert not judged.qualifies and "about even" in judged.verdict


def test_changes_within_noise_are_neither_gains_nor_costs():
    noisy = RunEnd({"a": 2.0, "b": 1.0}, [{"a": e["a"] * 0.8, "b": e["b"] * (1.03 + (0.2 if k % 2 else -0.2))}
                                          for k, e in enumerate(IN_FORCE.end)])
    judged = assess(noisy, IN_FORCE, found(), [], CONFIG)
    assert judged.change["b"] == pytest.approx(0.03, abs=0.01) and judged.noise["b"] > judged.change["b"] / 3
    assert judged.costs == {} and judged.qualifies


def test_a_term_that_diverged_in_the_candidate_is_an_infinite_cost():
    diverged = RunEnd({"a": 2.0, "b": 1.0}, [{"a": e["a"] * 0.5, "b": math.nan} for e in IN_FORCE.end])
    judged = assess(diverged, IN_FORCE, found(), [], CONFIG)
    assert judged.costs["b"] == math.inf and not judged.qualifies


def assessment(change: dict[str, float], qualifies: bool = True) -> Assessment:
    costs = {t: c for t, c in change.items() if c > 0}
    gains = {t: -c for t, c in change.items() if c < 0}
    return Assessment({}, {}, change, {}, gains, costs, qualifies, "")


def test_choose_takes_the_cheapest_of_those_within_min_gain_of_the_best():
    best = assessment({"a": -0.5, "b": 0.08})          # value 0.693 - 0.077 = 0.616, costs 8%
    close_cheaper = assessment({"a": -0.45, "b": 0.0})  # value 0.598: within 0.05 of the best, costs nothing
    far_cheaper = assessment({"a": -0.2, "b": 0.0})     # value 0.223: too far below
    assert choose([best, close_cheaper, far_cheaper], CONFIG) == 1
    assert choose([best, far_cheaper], CONFIG) == 0


def test_choose_skips_candidates_that_do_not_qualify_and_may_choose_none():
    unqualified = assessment({"a": -0.9, "b": 0.0}, qualifies=False)
    assert choose([unqualified, assessment({"a": -0.2})], CONFIG) == 1
    assert choose([unqualified], CONFIG) is None and choose([], CONFIG) is None


def test_choose_breaks_a_tie_in_cost_by_the_larger_value():
    assert choose([assessment({"a": -0.2}), assessment({"a": -0.22})], CONFIG) == 1


def test_halfway_is_the_geometric_midpoint_at_the_sum_of_the_first_weights():
    assert halfway({"a": 1.0, "b": 4.0}, {"a": 4.0, "b": 1.0}) == pytest.approx({"a": 2.5, "b": 2.5})
    start, towards = {"a": 1.0, "b": 1.0, "c": 2.0}, {"a": 100.0, "b": 1.0, "c": 0.02}
    middle = halfway(start, towards)
    assert sum(middle.values()) == pytest.approx(4.0)
    assert decades(start, middle) == pytest.approx(decades(start, towards) / 2)
    assert decades(middle, towards) == pytest.approx(decades(start, towards) / 2)


def test_halfway_leaves_a_weight_that_either_side_sets_to_zero():
    assert halfway({"a": 0.0, "b": 1.0}, {"a": 1.0, "b": 4.0}) == pytest.approx({"a": 0.0, "b": 1.0})
    assert halfway({"a": 0.0}, {"a": 1.0}) == {"a": 0.0}


def test_a_term_near_its_floor_pays_its_rise_over_a_tenth_of_its_start():
    """An aux head from 2.3 down to 0.0099 that ends at 0.0247 gives back 0.0148 of the 2.29 it learned: it pays
    0.0148 / (0.1 * 2.3) = 6.4%, not its +149% relative change."""
    in_force = RunEnd({"a": 1.0, "b": 1.0}, [{"a": 1.0 * j, "b": 0.0099 * j} for j in JITTER])
    run = RunEnd({"a": 2.0, "b": 1.0}, [{"a": 0.8 * j, "b": 0.0247 * j} for j in JITTER])
    started = {"a": Situation("a", STARVED, 1.5, 0.5, 1.0, None, None),
               "b": Situation("b", LEARNS, 2.3, 0.01, 0.0099, None, None)}
    judged = assess(run, in_force, started, [], CONFIG)
    assert judged.change["b"] == pytest.approx(0.0247 / 0.0099 - 1)
    assert judged.costs["b"] == pytest.approx((0.0247 - 0.0099) / (0.1 * 2.3))
    assert "bound" not in judged.verdict and "about even" in judged.verdict, "within the bound; the net gain decides"
    far = cost(Change(0.5, 0.01, 1.5, 1.0), start=2.0)     # the end under the weights in force sets the scale
    assert far.value == pytest.approx(0.5) and not far.floored


def test_a_rise_past_the_bound_is_a_cost_however_noisy():
    noisy = RunEnd({"a": 2.0, "b": 1.0}, [{"a": e["a"] * 0.8, "b": e["b"] * (1.15 + (0.6 if k % 2 else -0.6))}
                                          for k, e in enumerate(IN_FORCE.end)])
    judged = assess(noisy, IN_FORCE, found(), [], CONFIG)
    assert judged.change["b"] == pytest.approx(0.15, abs=0.01) and judged.noise["b"] * 3 > judged.change["b"]
    assert judged.costs["b"] == pytest.approx(judged.change["b"]) and not judged.qualifies
