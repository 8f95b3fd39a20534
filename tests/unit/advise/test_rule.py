"""The one rule over runs from the same start: the yardstick's pairing and noise, the situations, the candidates
it asks for and the decision, on per-batch end losses laid out as a trainer would report them."""
from __future__ import annotations

import math

import pytest

from lossdiag.advise.candidates import balance_factor, decades, same, stepped_down
from lossdiag.analyse.outcome import RunEnd, change
from lossdiag.advise.decision import KEEP, REWEIGHT, TRADE_OFF, Evidence
from lossdiag.advise.rule import decide, judge
from lossdiag.checks.situations import BEHIND, LEARNS, NEEDS_OTHERS, OPPOSED, STARVED, STALLED, situations
from lossdiag.config import Config

CONFIG = Config()
JITTER = (0.99, 1.01, 1.0, 0.995, 1.005, 1.0, 0.998, 1.002)


def batches(**means: float) -> list[dict[str, float]]:
    """Eight evaluation batches whose per-batch values scatter about 1% around each term's mean."""
    return [{t: m * j for t, m in means.items()} for j in JITTER]


def test_change_is_paired_batch_by_batch_and_in_the_terms_units():
    reference = [{"a": v} for v in (1.0, 2.0, 3.0, 4.0)]
    shifted = [{"a": v + 0.1} for v in (1.0, 2.0, 3.0, 4.0)]
    found = change(shifted, reference, "a")
    assert found.change == pytest.approx(0.1 / 2.5)
    assert found.noise == pytest.approx(0.0, abs=1e-12), "a shift common to every batch has no paired noise"
    assert found.clear(3.0) == 1
    scattered = [{"a": v + d} for v, d in zip((1.0, 2.0, 3.0, 4.0), (0.3, -0.3, 0.3, -0.2))]
    assert change(scattered, reference, "a").clear(3.0) == 0
    negative = change([{"a": -2.0}, {"a": -2.2}], [{"a": -1.0}, {"a": -1.1}], "a")
    assert negative.change < 0 and negative.clear(3.0) == -1, "a lower (more negative) loss is better"


def test_a_term_starting_at_zero_that_rises_is_opposed_without_a_relative_drop():
    start = batches(recon=100.0, kl=0.001)
    in_force = RunEnd({"recon": 1.0, "kl": 1.0}, batches(recon=20.0, kl=3.0))
    alone = {"recon": RunEnd({"recon": 1.0}, batches(recon=15.0, kl=5.0)),
             "kl": RunEnd({"kl": 1.0}, batches(recon=100.0, kl=0.0005))}
    found = situations(["recon", "kl"], start, in_force, alone, CONFIG)
    assert found["kl"].name == OPPOSED and found["kl"].combined == pytest.approx(3.0)
    assert found["recon"].name == BEHIND


def test_situations_starved_needs_others_stalled_and_learns():
    start = batches(drowned=1.0, loud=1000.0, fed=2.0, dead=1.0)
    in_force = RunEnd({}, batches(drowned=0.9, loud=10.0, fed=1.0, dead=1.0))
    alone = {"drowned": RunEnd({}, batches(drowned=0.2, loud=1000.0, fed=2.0, dead=1.0)),
             "loud": RunEnd({}, batches(drowned=1.0, loud=10.0, fed=2.0, dead=1.0)),
             "fed": RunEnd({}, batches(drowned=1.0, loud=1000.0, fed=2.0, dead=1.0)),
             "dead": RunEnd({}, batches(drowned=1.0, loud=1000.0, fed=2.0, dead=1.0))}
    found = situations(list(start[0]), start, in_force, alone, CONFIG)
    assert {t: s.name for t, s in found.items()} == {"drowned": STARVED, "loud": LEARNS, "fed": NEEDS_OTHERS,
                                                      "dead": STALLED}


def test_the_dominant_weight_is_stepped_down_on_a_log_scale_to_its_balance_point():
    steps = stepped_down({"seg": 1.0, "depth": 1.0}, "depth", 0.999, 0.5, 2.0)
    ratios = [w["depth"] / w["seg"] for w in steps]
    assert ratios[:2] == pytest.approx([0.1, 0.01])
    assert ratios[-1] == pytest.approx(balance_factor(0.999, 0.5))
    assert all(sum(w.values()) == pytest.approx(2.0) for w in steps)
    assert same({"a": 1.0, "b": 2.0}, {"a": 2.0, "b": 4.0}) and decades({"a": 1.0, "b": 1.0}, {"a": 1.0, "b": 0.01}) == 2


def evidence(in_force: RunEnd, candidates: list[RunEnd], main=()) -> Evidence:
    start = batches(main=2.0, aux=1.0)
    alone = {"main": RunEnd({"main": 1.0}, batches(main=0.5, aux=1.0)),
             "aux": RunEnd({"aux": 1.0}, batches(main=2.0, aux=0.1))}
    return Evidence(terms=["main", "aux"], weights={"main": 1.0, "aux": 1.0}, on="probe", start=start,
                    in_force=in_force, alone=alone, candidates=candidates, shares={"main": 0.95, "aux": 0.05},
                    dominant="main", targets={"main": 0.5, "aux": 0.5}, main=list(main))


def answer(first: Evidence, ends) -> object:
    """Run the rule's pending candidates with `ends(weights)` until it decides."""
    decision = decide(first, CONFIG)
    rounds = 0
    while decision.pending:
        rounds += 1
        assert rounds < 6, "the rule keeps asking for runs"
        first = Evidence(**{**first.__dict__, "candidates": [*first.candidates,
                                                              *(RunEnd(w, ends(w)) for w in decision.pending)]})
        decision = decide(first, CONFIG)
    return decision


def test_a_dominant_term_brings_candidates_and_the_cheapest_of_the_best_wins():
    in_force = RunEnd({"main": 1.0, "aux": 1.0}, batches(main=0.5, aux=0.8))
    first = decide(evidence(in_force, []), CONFIG)
    assert first.pending and first.kind == KEEP and first.reason == "verifying"
    assert all(not same(w, {"main": 1.0, "aux": 1.0}) for w in first.pending)

    def ends(w):
        ratio = w["aux"] / w["main"]
        return batches(main=0.5 * (1.0 + 0.02 * math.log10(ratio)), aux=0.8 / (1.0 + math.log10(ratio)))

    decision = answer(evidence(in_force, []), ends)
    assert decision.kind == REWEIGHT
    picked = decision.assessments[decision.chosen]
    assert picked.costs.get("main", 0.0) <= CONFIG.max_cost and picked.gains["aux"] >= CONFIG.min_gain
    assert "bound 10%" in decision.reason and decision.weights == picked.weights
    assert decision.outcome()["candidates"][decision.chosen]["weights"] == decision.weights


def test_main_terms_pay_nothing_and_costly_gains_are_a_trade_off():
    in_force = RunEnd({"main": 1.0, "aux": 1.0}, batches(main=0.5, aux=0.8))

    def ends(w):
        ratio = w["aux"] / w["main"]
        return batches(main=0.5 * (1.0 + 0.06 * math.log10(ratio)), aux=0.8 / (1.0 + math.log10(ratio)))

    assert answer(evidence(in_force, []), ends).kind == REWEIGHT
    guarded = answer(evidence(in_force, [], main=["main"]), ends)
    assert guarded.kind == TRADE_OFF and guarded.main == ["main"]
    assert all("main 'main'" in a.verdict for a in guarded.assessments if a.gains)
    assert "main 'main' +" in guarded.reason and "would pay" in guarded.reason
    assert "declare" not in guarded.reason and "other terms" not in guarded.reason


def test_nothing_to_gain_keeps_the_weights_and_says_dominance_is_by_design():
    in_force = RunEnd({"main": 1.0, "aux": 1.0}, batches(main=0.5, aux=0.1))
    decision = answer(evidence(in_force, []), lambda w: batches(main=0.5 * (1 + 0.3 * math.log10(w["aux"] / w["main"])),
                                                               aux=0.1))
    assert decision.kind == KEEP and decision.tried and "by design" in decision.reason
    assert decision.weights == {"main": 1.0, "aux": 1.0}


def test_without_a_run_in_force_nothing_is_recommended_only_a_candidate():
    decision = decide(evidence(None, []), CONFIG)
    assert decision.kind == KEEP and decision.candidate is not None and not decision.pending
    assert decision.outcome() is None



def test_gains_outweighed_by_changes_within_noise_name_no_empty_costs():
    in_force = RunEnd({"main": 1.0, "aux": 1.0}, batches(main=0.5, aux=0.8))
    within = [{"main": b["main"] * 1.055 + 0.06 * (1 if k % 2 else -1), "aux": b["aux"] * 0.903}
              for k, b in enumerate(in_force.end)]
    first = evidence(in_force, [])
    judged = judge(first.terms, first.start, in_force, first.alone, [RunEnd({"main": 1.0, "aux": 1.2}, within)], [],
                   CONFIG)
    assessment = judged.assessments[0]
    assert assessment.gains and not assessment.costs and not assessment.qualifies
    assert assessment.verdict == "'aux' -9.7%; gains and costs about even"
