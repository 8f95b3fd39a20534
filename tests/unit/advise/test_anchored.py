"""Candidates that raise the others keep the main terms' weights (candidates.anchors / anchored): the declared main
terms, else the one term the weights in force weigh most; the planned candidates never lower it to raise the
others, while the dominant term stepped down still goes down."""
from __future__ import annotations

import pytest

from lossdiag.advise.candidates import anchored, anchors
from lossdiag.advise.outcome import RunEnd
from lossdiag.advise.rule import Evidence, planned
from lossdiag.advise.situations import BEHIND, LEARNS, Situation
from lossdiag.config import Config

IN_FORCE = {"main": 1.0, "aux1": 0.3, "aux2": 0.3}


def test_the_main_terms_are_the_declared_ones_else_the_one_weighed_most():
    assert anchors(IN_FORCE, [], None) == ["main"]
    assert anchors(IN_FORCE, ["aux2"], None) == ["aux2"]
    assert anchors({"a": 1.0, "b": 1.0, "c": 0.5}, [], None) == [], "two share the largest weight: none"
    assert anchors(IN_FORCE, [], ["aux1", "aux2"]) == [], "only terms on shared parameters count"


def test_anchored_raises_the_others_instead_of_lowering_main():
    sum_kept = {"main": 0.4, "aux1": 0.6, "aux2": 0.6}
    assert anchored(sum_kept, IN_FORCE, ["main"]) == pytest.approx({"main": 1.0, "aux1": 1.5, "aux2": 1.5})
    raised = {"main": 1.2, "aux1": 0.2, "aux2": 0.2}
    assert anchored(raised, IN_FORCE, ["main"]) == raised and anchored(sum_kept, IN_FORCE, []) == sum_kept


def test_planned_candidates_keep_main_and_raise_the_helpers():
    found = {"main": Situation("main", LEARNS, 2.3, 0.35, 0.3, None, None),
             "aux1": Situation("aux1", BEHIND, 2.5, 0.12, 0.14, None, None),
             "aux2": Situation("aux2", BEHIND, 2.3, 0.15, 0.19, None, None)}
    end = [{"main": 0.3, "aux1": 0.14, "aux2": 0.19}] * 4
    evidence = Evidence(list(IN_FORCE), dict(IN_FORCE), "validation", end, RunEnd(dict(IN_FORCE), end), {}, [],
                        {"main": 0.9, "aux1": 0.04, "aux2": 0.06}, "main", {t: 1 / 3 for t in IN_FORCE})
    first = planned(evidence, found, Config())
    down = [w for w in first if w["main"] < IN_FORCE["main"]]
    assert down and all(w["main"] < w["aux1"] for w in down), "the dominant main stepped down is still tried"
    raised = [w for w in first if w not in down]
    assert len(raised) >= 2 and all(w["main"] == pytest.approx(1.0) for w in raised)
    assert all(min(w["aux1"], w["aux2"]) >= 0.3 - 1e-12 and max(w["aux1"], w["aux2"]) > 0.3 for w in raised)
