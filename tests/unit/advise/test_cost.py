"""What a term pays under a candidate (outcome.cost), the measure the rule's bound applies to: an ordinary term's
relative rise, past the bound however noisy; a term near its floor against a tenth of its start loss."""
from __future__ import annotations

import math

import pytest

from lossdiag.analyse.outcome import FLOOR_FRACTION, RunEnd, change, cost
from lossdiag.advise.rule import assess
from lossdiag.checks.situations import LEARNS, NEEDS_OTHERS, Situation
from lossdiag.config import Config

CONFIG = Config(min_gain=0.05, max_cost=0.1, check_noise_z=3.0)
JITTER = (0.99, 1.01, 1.0, 0.995, 1.005, 1.0, 0.998, 1.002)


def batches(**means: float) -> list[dict[str, float]]:
    return [{t: m * j for t, m in means.items()} for j in JITTER]


def situation(term: str, start: float, combined: float, name: str = LEARNS) -> Situation:
    return Situation(term, name, start, None, combined, None, None)


def test_an_ordinary_term_pays_its_rise_past_the_bound_however_noisy():
    """+28.7% +-10%: within 3 noise of no change, yet more than the printed 10% bound."""
    in_force = RunEnd({"main": 1.0, "aux": 1.0}, batches(main=0.5, aux=0.8))
    spread = 0.05 * math.sqrt(7.0)
    noisy = [{"main": b["main"] + 0.1435 + spread * (1 if k % 2 else -1), "aux": b["aux"] * 0.375}
             for k, b in enumerate(in_force.end)]
    measured = change(noisy, in_force.end, "main")
    assert measured.change == pytest.approx(0.287, abs=0.002) and measured.noise == pytest.approx(0.10, abs=0.002)
    assert measured.clear(CONFIG.check_noise_z) == 0
    found = {"main": situation("main", 0.7, 0.5), "aux": situation("aux", 1.0, 0.8)}
    judged = assess(RunEnd({"main": 1.0, "aux": 10.0}, noisy), in_force, found, [], CONFIG)
    assert judged.gains == {"aux": pytest.approx(0.625)}
    assert not judged.qualifies and judged.costs["main"] == pytest.approx(0.287, abs=0.002)
    assert judged.cost["main"] == pytest.approx(measured.change) and not judged.floored
    assert "costs 'main' +28.7% (bound 10%)" in judged.verdict
    within = [{"main": b["main"] * 1.08 + 0.06 * (1 if k % 2 else -1), "aux": b["aux"] * 0.375}
              for k, b in enumerate(in_force.end)]
    cheap = assess(RunEnd({"main": 1.0, "aux": 10.0}, within), in_force, found, [], CONFIG)
    assert cheap.qualifies and "main" not in cheap.costs, "within the bound and within noise: no cost"


def test_a_term_near_its_floor_pays_its_rise_against_a_tenth_of_its_start():
    """aux1 fell from 2.3 to 0.0099 under the weights in force; the candidate that trains main leaves it at 0.0247:
    +148% of its end, but 0.0148 is 6.4% of a tenth of its start: within the bound, and printed as such."""
    in_force = RunEnd({"main": 1.0, "aux1": 0.3}, batches(main=0.838, aux1=0.0099))
    run = RunEnd({"main": 0.229, "aux1": 0.686}, batches(main=0.192, aux1=0.0247))
    found = {"main": situation("main", 2.30, 0.838, NEEDS_OTHERS), "aux1": situation("aux1", 2.30, 0.0099)}
    measured = change(run.end, in_force.end, "aux1")
    assert measured.change == pytest.approx(1.495, abs=0.01) and measured.clear(CONFIG.check_noise_z) == 1
    paid = cost(measured, 2.30)
    assert paid.floored and paid.value == pytest.approx((0.0247 - 0.0099) / (FLOOR_FRACTION * 2.30))
    judged = assess(run, in_force, found, [], CONFIG)
    assert judged.qualifies, judged.verdict
    assert judged.cost["aux1"] == pytest.approx(paid.value) and judged.floored == ["aux1"]
    assert judged.verdict.startswith("qualifies (costs 'aux1' +6.4% of 0.1 x its start, bound 10%)"), judged.verdict
    assert judged.to_dict()["change"]["aux1"] == pytest.approx(measured.change), "change keeps its CONTRACT meaning"
    far = RunEnd({"main": 0.229, "aux1": 0.686}, batches(main=0.192, aux1=0.0099 + 0.03))
    over = assess(far, in_force, found, [], CONFIG)
    assert not over.qualifies and "'aux1' +13.0% of 0.1 x its start (bound 10%)" in over.verdict
