"""Properties of the analysers on records of real runs: order invariance, scaling, symmetry."""
import copy

import numpy as np
import pytest

import lossdiag
from lossdiag.analyse.run import parse
from lossdiag.advise.diagnose import diagnose
from models import TiedThreeHeads, tied_batch, tied_terms

BATCHES = [tied_batch(seed) for seed in range(4)]


def _profile(losses, steps=12, **options):
    return lossdiag.profile(TiedThreeHeads, BATCHES, losses, steps=steps, no_checks=True, **options)


def _permuted(records, order):
    """The same run's records with the terms listed in another order."""
    out = copy.deepcopy(records)
    meta = out[0]
    index = [meta["terms"].index(t) for t in order]
    meta["terms"] = list(order)
    for record in out[1:]:
        grad = record.get("grad")
        if grad:
            grad["gram"] = [[grad["gram"][a][b] for b in index] for a in index]
    return out


def test_shares_sum_to_one_and_are_invariant_to_term_order():
    records = _profile(tied_terms).records
    original = diagnose(records)
    reordered = diagnose(_permuted(records, ["c", "a", "b"]))
    assert sum(original.dominance.shares.values()) == pytest.approx(1.0)
    for term in "abc":
        assert reordered.dominance.shares[term] == pytest.approx(original.dominance.shares[term], rel=1e-12)
        assert reordered.suggestion.weights[term] == pytest.approx(original.suggestion.weights[term], rel=1e-12)


def test_terms_listed_in_another_order_by_the_model_give_the_same_shares():
    def reversed_terms(model, batch):
        return dict(reversed(list(tied_terms(model, batch).items())))

    forward = _profile(tied_terms, steps=1).summary
    backward = _profile(reversed_terms, steps=1).summary
    assert backward["terms"] == ["c", "b", "a"]
    for term in "abc":
        assert backward["dominance"][term] == pytest.approx(forward["dominance"][term], rel=1e-6)


@pytest.mark.parametrize("scale", [1e-3, 7.0, 250.0])
def test_scaling_a_term_by_c_scales_its_raw_suggested_weight_by_one_over_c(scale):
    def scaled(model, batch):
        terms = tied_terms(model, batch)
        return {**terms, "b": scale * terms["b"]}

    plain = _profile(tied_terms, steps=1).summary["suggested_weights"]
    rescaled = _profile(scaled, steps=1).summary["suggested_weights"]
    for other in "ac":
        ratio_before = plain["b"] / plain[other]
        ratio_after = rescaled["b"] / rescaled[other]
        assert ratio_after == pytest.approx(ratio_before / scale, rel=1e-5)
    assert sum(rescaled.values()) == pytest.approx(1.0)


def test_cosine_matrix_is_symmetric_with_unit_diagonal():
    diagnosis = diagnose(_profile(tied_terms).records)
    cosines = diagnosis.cosines
    np.testing.assert_allclose(cosines, cosines.T)
    np.testing.assert_allclose(np.diag(cosines), 1.0)
    assert np.all(np.abs(cosines) <= 1.0)
    for pair in diagnosis.conflicts:
        a, b = (diagnosis.run.terms.index(t) for t in pair.terms)
        assert cosines[a, b] == pytest.approx(pair.cosine_median)
        assert 0.0 <= pair.negative_fraction <= 1.0


def test_suggested_weights_balance_the_weighted_norms_of_the_recorded_window():
    diagnosis = diagnose(_profile(tied_terms).records)
    balanced = [diagnosis.suggestion.weights[t] * diagnosis.dominance.grad_norms[t] for t in "abc"]
    assert max(balanced) == pytest.approx(min(balanced), rel=1e-9)


def test_alpha_curve_rises_with_alpha_and_crosses_one_half_near_the_suggestion(examples):
    result = lossdiag.profile(str(examples / "two_outputs.py"), steps=30, no_checks=True)
    curve = result.diagnosis.alpha_curve
    assert curve is not None and np.all(np.diff(curve.first_share) >= 0)
    logit = lambda a: np.log(a / (1 - a))  # noqa: E731
    at_suggestion = np.interp(logit(curve.suggested_alpha), logit(curve.alphas), curve.first_share)
    assert at_suggestion == pytest.approx(0.5, abs=0.01)
    assert np.all(curve.first_share_low <= curve.first_share_high)
    assert curve.current_alpha == pytest.approx(0.5)


def test_parse_rejects_records_without_a_header():
    with pytest.raises(ValueError, match="header"):
        parse([{"kind": "step", "step": 0, "loss": {}}])
