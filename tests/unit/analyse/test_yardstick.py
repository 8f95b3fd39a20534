"""The outcome yardstick on hand-made per-batch losses: a term's change is its mean end against the reference's
mean, in the term's units, and its noise the standard error of the paired differences (worked out here with the
statistics module), so that a change is clear only beyond z of it."""
from __future__ import annotations

import math
import statistics

import pytest

from lossdiag.analyse.outcome import Change, RunEnd, change, changes, mean_of

REFERENCE = [1.0, 2.0, 3.0, 4.0]
END = [1.1, 2.3, 2.9, 4.2]


def per_batch(values, term="a"):
    return [{term: v} for v in values]


def test_the_change_is_the_relative_difference_of_the_means():
    found = change(per_batch(END), per_batch(REFERENCE), "a")
    assert found.end == pytest.approx(statistics.mean(END)) and found.reference == pytest.approx(2.5)
    assert found.change == pytest.approx((2.625 - 2.5) / 2.5)


def test_the_noise_is_the_standard_error_of_the_paired_differences_over_the_reference_mean():
    differences = [e - r for e, r in zip(END, REFERENCE)]
    expected = statistics.stdev(differences) / math.sqrt(len(differences)) / statistics.mean(REFERENCE)
    assert change(per_batch(END), per_batch(REFERENCE), "a").noise == pytest.approx(expected)


def test_unpaired_spread_does_not_count_as_noise():
    """Batches that differ a lot from one another but move together: the paired noise is small, the change clear."""
    reference = [1.0, 10.0, 100.0]
    end = [v - 0.5 for v in reference]
    found = change(per_batch(end), per_batch(reference), "a")
    assert found.change == pytest.approx(-0.5 / 37.0)
    assert found.noise == pytest.approx(0.0, abs=1e-12) and found.clear(3.0) == -1
    unpaired = statistics.stdev(end) / math.sqrt(3) / 37.0
    assert abs(found.change) < 3.0 * unpaired, "compared unpaired, the same change would be lost in the spread"


def test_a_negative_loss_is_measured_against_its_magnitude():
    found = change(per_batch([-2.0, -2.2]), per_batch([-1.0, -1.2]), "a")
    assert found.change == pytest.approx((-2.1 - -1.1) / 1.1)
    assert found.clear(0.0) == -1, "a lower (more negative) loss is better"


@pytest.mark.parametrize("end, reference", [([1.0, 2.0], [1.0]), ([1.0, float("nan")], [1.0, 2.0]),
                                            ([1.0, None], [1.0, 2.0]), ([], []), ([1.0, 2.0], [-1.0, 1.0])])
def test_the_change_is_undefined_where_the_batches_do_not_pair_or_a_value_is_not_finite(end, reference):
    found = change(per_batch(end), per_batch(reference), "a")
    assert found.change is None and found.noise is None and found.clear(3.0) == 0


def test_the_end_is_kept_when_only_the_reference_is_unusable():
    assert change(per_batch([1.0, 3.0]), per_batch([-1.0, 1.0]), "a").end == pytest.approx(2.0)
    assert change(per_batch([1.0, float("inf")]), per_batch([1.0, 2.0]), "a").end is None


def test_one_batch_has_a_change_but_no_noise():
    found = change(per_batch([1.5]), per_batch([1.0]), "a")
    assert found.change == pytest.approx(0.5) and found.noise is None and found.clear(3.0) == 0


@pytest.mark.parametrize("value, z, expected", [(0.31, 0.1, 1), (0.29, 0.1, 0), (-0.31, 0.1, -1), (-0.29, 0.1, 0)])
def test_a_change_is_clear_only_beyond_z_noise(value, z, expected):
    assert Change(value, z, 1.0, 1.0).clear(3.0) == expected


def test_means_and_changes_cover_every_term_and_a_missing_value_is_nan():
    run = RunEnd({"a": 1.0, "b": 1.0}, [{"a": 1.0, "b": 2.0}, {"a": 3.0, "b": None}])
    assert run.mean["a"] == pytest.approx(2.0) and math.isnan(run.mean["b"])
    assert mean_of([]) == {}
    found = changes([{"a": e, "b": 2 * e} for e in END], [{"a": r, "b": 2 * r} for r in REFERENCE], ["a", "b"])
    assert found["a"].change == pytest.approx(found["b"].change) == pytest.approx(0.05)
