"""The one definition of a term's share and of the cosine (lossdiag.analyse.quantities): their NaN and zero rules,
and the readers (the logger scalars, dominance, the layer shares) giving the same numbers from the same figures."""
from __future__ import annotations

import math

import numpy as np
import pytest

from lossdiag.analyse.quantities import cosine, cosines, share_rows, shares_among
from lossdiag.report.scalars import step_scalars

NAN = math.nan


def test_a_share_is_the_weighted_norm_over_the_sharing_terms_total():
    assert shares_among({"a": 3.0, "b": 1.0}) == {"a": 0.75, "b": 0.25}


def test_shares_are_the_same_whatever_the_term_order():
    forward = shares_among({"a": 3.0, "b": 1.0, "c": 4.0})
    backward = shares_among({"c": 4.0, "b": 1.0, "a": 3.0})
    assert forward == pytest.approx(backward)


def test_a_term_that_does_not_share_has_share_zero_whatever_its_norm():
    assert shares_among({"a": 2.0, "b": 2.0, "head": NAN}, sharing={"a", "b"}) == {"a": 0.5, "b": 0.5, "head": 0.0}


def test_a_nan_among_the_sharing_terms_leaves_their_shares_undefined_and_the_others_at_zero():
    found = shares_among({"a": 2.0, "b": NAN, "head": 5.0}, sharing={"a", "b"})
    assert math.isnan(found["a"]) and math.isnan(found["b"]) and found["head"] == 0.0


def test_an_infinite_norm_leaves_the_shares_undefined():
    found = shares_among({"a": math.inf, "b": 1.0})
    assert all(math.isnan(v) for v in found.values())


def test_all_zero_gradients_give_undefined_shares_not_a_division_by_zero():
    found = shares_among({"a": 0.0, "b": 0.0})
    assert all(math.isnan(v) for v in found.values())


def test_no_sharing_term_gives_every_term_share_zero():
    assert shares_among({"a": 1.0, "b": 2.0}, sharing=()) == {"a": 0.0, "b": 0.0}


def test_share_rows_applies_the_rule_row_by_row():
    weighted = np.array([[1.0, 3.0], [2.0, NAN], [0.0, 0.0], [4.0, 9.0]])
    reached = np.array([[True, True], [True, True], [True, True], [True, False]])
    rows = share_rows(weighted, reached)
    np.testing.assert_allclose(rows[0], [0.25, 0.75])
    assert np.isnan(rows[1]).all() and np.isnan(rows[2]).all()
    np.testing.assert_allclose(rows[3], [1.0, 0.0])


def test_the_cosine_of_two_gradients_from_their_gram_entries():
    a, b = np.array([1.0, 2.0, -1.0]), np.array([-2.0, 0.5, 3.0])
    expected = float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
    assert cosine(float(a @ b), float(a @ a), float(b @ b)) == pytest.approx(expected)


def test_the_cosine_is_undefined_when_either_gradient_is_zero_or_a_figure_is_nan():
    assert math.isnan(cosine(0.0, 0.0, 4.0))
    assert math.isnan(cosine(NAN, 1.0, 1.0))
    assert math.isnan(cosine(1.0, NAN, 1.0))
    assert math.isnan(cosine(1.0, -1.0, 1.0))


def test_rounding_past_one_is_clipped_to_one():
    assert cosine(1.0 + 1e-12, 1.0, 1.0) == 1.0 and cosine(-1.0 - 1e-12, 1.0, 1.0) == -1.0


def test_cosines_is_elementwise_and_symmetric():
    dots, squares_a, squares_b = np.array([1.0, -2.0, 0.0]), np.array([1.0, 4.0, 0.0]), np.array([4.0, 1.0, 1.0])
    forward, backward = cosines(dots, squares_a, squares_b), cosines(dots, squares_b, squares_a)
    np.testing.assert_allclose(forward[:2], [0.5, -1.0])
    np.testing.assert_array_equal(np.isnan(forward), [False, False, True])
    np.testing.assert_allclose(forward, backward, equal_nan=True)


def _step(weights: dict, norms: dict, gram: list, reach: dict) -> dict:
    return {"kind": "step", "step": 3, "loss": {t: 1.0 for t in weights},
            "grad": {"norms": norms, "norms_all": norms, "weights": weights, "gram": gram,
                     "term_shared_parameters": reach}}


def test_the_logger_scalars_give_the_shares_and_cosines_of_the_one_definition():
    weights, norms = {"a": 2.0, "b": 0.5, "c": 1.0}, {"a": 1.0, "b": 4.0, "c": 3.0}
    gram = [[1.0, -2.0, 0.0], [-2.0, 16.0, 0.0], [0.0, 0.0, 9.0]]
    scalars = step_scalars(_step(weights, norms, gram, {"a": 2, "b": 2, "c": 0}), ["a", "b", "c"])
    expected = shares_among({t: weights[t] * norms[t] for t in weights}, sharing={"a", "b"})
    assert {t: scalars[f"lossdiag/{t}/share"] for t in weights} == expected == {"a": 0.5, "b": 0.5, "c": 0.0}
    assert scalars["lossdiag/cosine/a~b"] == cosine(-2.0, 1.0, 16.0) == -0.5
    assert "lossdiag/cosine/a~c" not in scalars


def test_the_logger_scalars_of_a_step_with_a_nan_norm_have_undefined_shares():
    scalars = step_scalars(_step({"a": 1.0, "b": 1.0}, {"a": NAN, "b": 1.0}, [[NAN, NAN], [NAN, 1.0]],
                                 {"a": 1, "b": 1}), ["a", "b"])
    assert math.isnan(scalars["lossdiag/a/share"]) and math.isnan(scalars["lossdiag/b/share"])
    assert math.isnan(scalars["lossdiag/cosine/a~b"])
