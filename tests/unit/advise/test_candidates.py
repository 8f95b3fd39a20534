"""The candidate weightings' arithmetic on hand-made numbers: each expected value is worked out here from what the
candidate means (a share reached, a step of a decade, a gain ratio), not read back from the code."""
from __future__ import annotations

import math

import pytest

from lossdiag.advise.candidates import (MAX_FACTOR, SAME_DECADES, balance_factor, decades, distinct, fixed_point,
                                        helpers_up, moved, rescaled, same, share_balancing, stepped_down, stepped_up)
from lossdiag.checks.situations import BEHIND, LEARNS, NEEDS_OTHERS, OPPOSED, STALLED, STARVED, Situation


def seen(term: str, name: str, start: float = 1.0, alone: float = 0.5, combined: float = 0.9) -> Situation:
    return Situation(term, name, start, alone, combined, None, None)


def share_after(share: float, factor: float) -> float:
    """A term's share of the summed weighted gradient norms once its weight is multiplied by `factor`."""
    return factor * share / (factor * share + (1.0 - share))


@pytest.mark.parametrize("share, target", [(0.9, 0.5), (0.999, 0.5), (0.1, 0.5), (0.5, 0.2), (0.3, 0.3)])
def test_the_balance_factor_takes_the_share_to_its_target(share, target):
    assert share_after(share, balance_factor(share, target)) == pytest.approx(target)


def test_rescaled_keeps_the_ratios_and_reaches_the_total():
    assert rescaled({"a": 1.0, "b": 3.0}, 2.0) == pytest.approx({"a": 0.5, "b": 1.5})
    assert rescaled({"a": 0.0, "b": 0.0}, 2.0) == {"a": 0.0, "b": 0.0}, "nothing to scale"


def test_moved_rescales_only_the_moved_terms_into_the_room_the_others_leave():
    # c keeps its 2; a and b, moved by 2 and 1, share the remaining 2 as 2:1
    assert moved({"a": 1.0, "b": 1.0, "c": 2.0}, {"a": 2.0, "b": 1.0}, 4.0) == pytest.approx(
        {"a": 4 / 3, "b": 2 / 3, "c": 2.0})


def test_moved_rescales_every_term_when_the_kept_ones_fill_the_total():
    # c alone is 4 = the total: {a: 3, c: 4} scaled to 4 is {a: 12/7, c: 16/7}
    assert moved({"a": 1.0, "c": 4.0}, {"a": 3.0}, 4.0) == pytest.approx({"a": 12 / 7, "c": 16 / 7})


def test_share_balancing_puts_the_weighted_gradients_in_the_target_ratios():
    shares = {"a": 0.8, "b": 0.2, "off": 0.0}
    weights = share_balancing({"a": 1.0, "b": 1.0, "off": 1.0}, shares, {"a": 0.5, "b": 0.5}, 3.0)
    # each share scales with its weight: a 0.8 * w_a, b 0.2 * w_b stand 1:1 when w_b = 4 w_a; 'off' keeps its 1
    assert weights["off"] == pytest.approx(1.0)
    assert weights["b"] / weights["a"] == pytest.approx(4.0)
    assert weights["a"] + weights["b"] == pytest.approx(2.0)


def test_one_step_down_lands_on_the_balance_point_when_a_decade_would_overshoot():
    # share 0.9 to 0.5: factor 0.5 * 0.1 / (0.9 * 0.5) = 1/9, above 1/10, so the only candidate is 1/9 itself
    (only,) = stepped_down({"a": 1.0, "b": 1.0}, "a", 0.9, 0.5, 2.0)
    assert only == pytest.approx({"a": 0.2, "b": 1.8})   # {1/9, 1} scaled to 2


def test_steps_down_are_whole_decades_above_the_balance_point_at_most_two_then_the_balance_point():
    steps = stepped_down({"a": 1.0, "b": 1.0}, "a", 1 - 1e-7, 0.5, 2.0)
    ratios = [w["a"] / w["b"] for w in steps]
    assert ratios[:2] == pytest.approx([0.1, 0.01]) and len(steps) == 3
    assert ratios[2] == pytest.approx(1e-6, rel=1e-3), "a share of 1 is taken as 1 - 1e-6, not a division by 0"


def test_steps_down_skip_a_decade_within_a_twentieth_of_one_of_the_balance_point():
    # balance 0.099: 0.1 lies within 10**0.05 of it, so only the balance point is run
    share = 1 / (1 + 0.099)          # balance_factor(share, 0.5) = (1 - share) / share = 0.099
    assert [w["a"] for w in stepped_down({"a": 1.0, "b": 1.0}, "a", share, 0.5, 2.0)] == pytest.approx(
        [2 * 0.099 / 1.099])


def test_a_dominant_term_with_the_whole_target_is_stepped_down_by_decades_only():
    steps = stepped_down({"a": 1.0, "b": 1.0}, "a", 0.9, 1.0, 2.0)
    assert [w["a"] / w["b"] for w in steps] == pytest.approx([0.1, 0.01])


@pytest.mark.parametrize("share, weights", [(0.0, {"a": 1.0, "b": 1.0}), (float("nan"), {"a": 1.0, "b": 1.0}),
                                            (0.9, {"a": 0.0, "b": 1.0})])
def test_nothing_to_step_down_without_a_share_or_a_weight(share, weights):
    assert stepped_down(weights, "a", share, 0.5, 1.0) == []


def test_lagging_terms_are_stepped_up_a_decade_each_the_first_two():
    found = {"s": seen("s", STARVED), "b": seen("b", BEHIND), "o": seen("o", OPPOSED), "l": seen("l", LEARNS)}
    ups = stepped_up({"s": 1.0, "b": 1.0, "o": 1.0, "l": 1.0}, found, 4.0)
    # {10, 1, 1, 1} scaled to 4 is {40/13, 4/13, 4/13, 4/13}
    assert len(ups) == 2
    assert ups[0] == pytest.approx({"s": 40 / 13, "b": 4 / 13, "o": 4 / 13, "l": 4 / 13})
    assert ups[1] == pytest.approx({"s": 4 / 13, "b": 40 / 13, "o": 4 / 13, "l": 4 / 13})


def test_a_lagging_term_without_weight_is_not_stepped_up():
    found = {"s": seen("s", STARVED), "l": seen("l", LEARNS)}
    assert stepped_up({"s": 0.0, "l": 1.0}, found, 1.0) == []


def test_the_helpers_of_a_term_that_needs_the_others_are_stepped_up_together():
    found = {"n": seen("n", NEEDS_OTHERS), "m": seen("m", LEARNS), "k": seen("k", STALLED)}
    (helped,) = helpers_up({"n": 1.0, "m": 1.0, "k": 1.0}, found, 3.0)
    assert helped == pytest.approx({"n": 3 / 21, "m": 30 / 21, "k": 30 / 21})
    assert helpers_up({"m": 1.0}, {"m": seen("m", LEARNS)}, 1.0) == []


def test_the_fixed_point_multiplies_each_lagging_weight_by_its_gain_alone_over_its_gain_combined():
    found = {"s": seen("s", STARVED, start=1.0, alone=0.2, combined=0.9),     # 0.8 / 0.1 = 8
             "b": seen("b", BEHIND, start=2.0, alone=1.0, combined=1.5),      # 1.0 / 0.5 = 2
             "l": seen("l", LEARNS, start=1.0, alone=0.5, combined=0.5)}      # not lagging: 1
    point = fixed_point({"s": 1.0, "b": 1.0, "l": 2.0}, found, 4.0)
    assert point == pytest.approx({"s": 8 / 3, "b": 2 / 3, "l": 2 / 3})     # {8, 2, 2} scaled to 4


def test_the_fixed_point_factor_stops_at_a_hundred_when_the_term_got_worse_combined():
    found = {"s": seen("s", STARVED, start=1.0, alone=0.5, combined=1.2), "l": seen("l", LEARNS)}
    point = fixed_point({"s": 1.0, "l": 1.0}, found, 2.0)
    assert point["s"] / point["l"] == pytest.approx(MAX_FACTOR)


def test_no_fixed_point_without_a_lagging_term_that_was_run_alone():
    assert fixed_point({"a": 1.0}, {"a": seen("a", LEARNS)}, 1.0) is None
    assert fixed_point({"a": 1.0}, {"a": Situation("a", STARVED, 1.0, None, 0.9, None, None)}, 1.0) is None


def test_decades_measure_the_spread_of_weight_ratios_blind_to_a_common_scale():
    assert decades({"a": 1.0, "b": 1.0}, {"a": 10.0, "b": 1.0}) == pytest.approx(1.0)
    assert decades({"a": 2.0, "b": 4.0}, {"a": 1.0, "b": 2.0}) == pytest.approx(0.0)
    assert decades({"a": 1.0, "b": 1.0, "c": 1.0}, {"a": 100.0, "b": 1.0, "c": 0.1}) == pytest.approx(3.0)
    assert decades({"a": 1.0}, {"b": 1.0}) == math.inf
    assert decades({"a": 1.0, "b": 0.0}, {"a": 1.0, "b": 1.0}) == math.inf
    assert decades({"a": 0.0}, {"a": 0.0}) == 0.0


def test_distinct_keeps_the_first_of_each_weighting_up_to_scale_and_drops_those_taken():
    near, far = 10 ** (SAME_DECADES * 0.8), 10 ** (SAME_DECADES * 1.2)
    first, scaled, taken = {"a": 1.0, "b": 1.0}, {"a": 3.0, "b": 3.0}, {"a": 1.0, "b": 5.0}
    kept = distinct([first, scaled, {"a": near, "b": 1.0}, {"a": far, "b": 1.0}, {"a": 2.0, "b": 10.0}], [taken])
    assert kept == [first, {"a": far, "b": 1.0}]
    assert same(first, scaled) and not same(first, {"a": far, "b": 1.0})


CANDIDATES = {
    "share_balancing": lambda w, found: [share_balancing(w, {"a": 0.9, "b": 0.08, "c": 0.02}, {"a": 0.5, "b": 0.5},
                                                         sum(w.values()))],
    "stepped_down": lambda w, found: stepped_down(w, "a", 0.9, 0.3, sum(w.values())),
    "stepped_up": lambda w, found: stepped_up(w, found, sum(w.values())),
    "helpers_up": lambda w, found: helpers_up(w, found, sum(w.values())),
    "fixed_point": lambda w, found: [fixed_point(w, found, sum(w.values()))],
}


@pytest.mark.parametrize("kind", sorted(CANDIDATES))
def test_every_candidate_keeps_the_sum_of_the_weights_in_force_and_every_weight_positive(kind):
    """The property each candidate promises (an SGD step keeps its size), checked once for all of them."""
    weights = {"a": 0.5, "b": 2.0, "c": 1.5}
    found = {"a": seen("a", LEARNS), "b": seen("b", STARVED, alone=0.1), "c": seen("c", NEEDS_OTHERS)}
    made = CANDIDATES[kind](weights, found)
    assert made
    for candidate in made:
        assert set(candidate) == set(weights)
        assert sum(candidate.values()) == pytest.approx(4.0)
        assert all(w > 0 for w in candidate.values())
        assert not same(candidate, weights), "a candidate moves the weights"
