"""The starved rule, defined once (checks.situations.gain_kept): the part of its alone gain a term keeps under the
weights in force, its missing-figure and no-gain rules, and the situation named from it on hand-made run ends."""
from __future__ import annotations

import pytest

from lossdiag.analyse.outcome import RunEnd
from lossdiag.checks.situations import (BEHIND, LEARNS, STARVED, Situation, SituationName, gain_kept,
                                       lifted_out_of_starvation, situation)
from lossdiag.config import Config

CONFIG = Config()


def test_the_gain_kept_is_the_combined_gain_over_the_alone_gain():
    assert gain_kept(2.0, 1.0, 1.75) == pytest.approx(0.25)
    assert gain_kept(2.0, 1.0, 1.0) == 1.0 and gain_kept(2.0, 1.0, 2.5) == pytest.approx(-0.5)


def test_no_gain_alone_or_a_missing_figure_keeps_nothing_defined():
    assert gain_kept(2.0, 2.0, 1.0) is None and gain_kept(2.0, 2.5, 1.0) is None
    assert gain_kept(None, 1.0, 1.0) is None and gain_kept(2.0, None, 1.0) is None


def test_no_figure_combined_keeps_none_of_the_gain():
    assert gain_kept(2.0, 1.0, None) == 0.0


def test_a_starved_term_is_rescued_only_past_the_starved_line_under_the_new_weights():
    seen = Situation("seg", STARVED, start=2.0, alone=1.0, combined=1.9, against_alone=0.9, against_alone_noise=0.01)
    ratio = CONFIG.starved_ratio
    assert not lifted_out_of_starvation(seen, 2.0 - 0.5 * ratio, ratio)  # helped (from 1.9), still starved
    assert lifted_out_of_starvation(seen, 2.0 - 2.0 * ratio, ratio)
    assert not lifted_out_of_starvation(seen, None, ratio)


def batches(values: list[float], term: str = "aux") -> list[dict[str, float]]:
    return [{term: v} for v in values]


START = batches([2.0, 2.1, 1.9, 2.0])
ALONE = RunEnd({"aux": 1.0}, batches([1.0, 1.05, 0.95, 1.0]))


@pytest.mark.parametrize("combined, expected", [(1.9, STARVED), (1.5, BEHIND), (1.0, LEARNS)])
def test_a_term_is_starved_when_it_keeps_at_most_starved_ratio_of_its_alone_gain(combined, expected):
    in_force = RunEnd({"aux": 1.0}, batches([combined, combined + 0.05, combined - 0.05, combined]))
    found = situation("aux", START, in_force, ALONE, CONFIG)
    kept = gain_kept(found.start, found.alone, found.combined)
    assert found.name is expected and isinstance(found.name, SituationName)
    assert (kept <= CONFIG.starved_ratio) == (expected is STARVED)
