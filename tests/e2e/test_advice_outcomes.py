"""Issue 15's acceptance: the profile's advice, followed in plain PyTorch, judged on held-out batches.

Each test profiles a fixture model file with the default options (in-process, as `lossdiag profile` does), trains
the model from the same start under the weights the profile recommends with the independent harness of
tests/outcomes.py, and compares every term's held-out loss with the run under the weights in force, averaged over
two seeds. The ground truth behind each bound (which weights serve, measured the same way) is in the fixtures'
docstrings; "rescued" means the advice closes at least half of the gap between the weights in force and the
term trained alone.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import pytest

import lossdiag
from outcomes import follow, mean_terms
from paths import EXAMPLES, FIXTURES

SEEDS = (0, 1)
COST_BOUND = 0.10      # the acceptance: following the advice costs no term more than 10% held-out


def held_out(path: Path, weights: Mapping[str, float] | None = None) -> dict[str, float]:
    """Each term's held-out loss after training under `weights` (default: the file's own), averaged over SEEDS."""
    return mean_terms(follow(path, weights, seeds=SEEDS))


def advised_weights(summary: dict) -> dict[str, float]:
    """The weights a user trains with after reading the advice: the recommended ones on `reweight`, else the same."""
    return summary["recommended_weights"] if summary["recommendation"] == "reweight" else summary["weights"]


def errors(result: lossdiag.ProfileResult) -> list[dict]:
    return [f for f in result.summary["findings"] if f["severity"] == "error"]


def assert_rescued(path: Path, starved: str) -> None:
    summary = lossdiag.profile(str(path), progress=False).summary
    assert summary["recommendation"] == "reweight", summary["verdict"]
    in_force, advised = held_out(path), held_out(path, summary["recommended_weights"])
    alone = held_out(path, {name: float(name == starved) for name in summary["terms"]})
    gap = in_force[starved] - alone[starved]
    assert advised[starved] <= in_force[starved] - 0.5 * gap, (in_force, advised, alone)


def test_a_head_drowned_by_a_target_in_the_wrong_units_is_rescued_at_a_bounded_cost():
    path = FIXTURES / "outcome_dense_units.py"
    summary = lossdiag.profile(str(path), progress=False).summary
    assert summary["recommendation"] == "reweight", summary["verdict"]
    in_force, advised = held_out(path), held_out(path, summary["recommended_weights"])
    assert advised["segmentation"] <= 0.5 * in_force["segmentation"], (in_force, advised)
    for term in summary["terms"]:
        assert advised[term] <= (1 + COST_BOUND) * in_force[term], (term, in_force, advised)


def test_a_vae_keeps_its_elbo_under_the_profiles_advice_and_the_sweeps_without_a_metric():
    path = FIXTURES / "outcome_vae.py"
    beta_one = sum(held_out(path).values())
    summary = lossdiag.profile(str(path), progress=False).summary
    assert sum(held_out(path, advised_weights(summary)).values()) <= (1 + COST_BOUND) * beta_one
    chosen = lossdiag.sweep(str(path), progress=False).recommended
    swept = held_out(path, chosen["weights"]) if chosen is not None else held_out(path)
    assert sum(swept.values()) <= (1 + COST_BOUND) * beta_one, chosen


def test_aux_heads_weighted_too_low_are_no_error_and_the_advice_trains_the_main_head_better():
    path = FIXTURES / "outcome_aux_too_low.py"
    result = lossdiag.profile(str(path), progress=False)
    assert errors(result) == []
    in_force, advised = held_out(path), held_out(path, advised_weights(result.summary))
    assert advised["main"] <= 0.8 * in_force["main"], (result.summary["verdict"], in_force, advised)


def test_an_aux_head_by_design_is_kept():
    summary = lossdiag.profile(str(FIXTURES / "advice_aux_by_design.py"), progress=False).summary
    assert summary["recommendation"] == "keep", summary["verdict"]


@pytest.mark.parametrize("path, starved", [(EXAMPLES / "two_outputs.py", "classification"),
                                           (FIXTURES / "advice_misscaled_cnn.py", "main"),
                                           (FIXTURES / "outcome_forum.py", "loss_2")],
                         ids=["readme-example", "misscaled-cnn", "forum"])
def test_the_starved_term_is_rescued(path, starved):
    assert_rescued(path, starved)
