"""Each figure's info object as data (optuna's pattern): what a figure plots is picked, smoothed, thinned and scaled
by an `*_info` function, and these tests assert on it without drawing a pixel."""
import math

import numpy as np
import pytest

from lossdiag.report.downsample import MAX_POINTS
from lossdiag.report.figures.info import MAX_BANDS, checks_info, cosines_info, layers_info, series_info, shares_info
from lossdiag.report.figures.outcome_info import ALPHA_EDGE, alpha_info, end_loss_info, weights_info
from lossdiag.report.figures.profile import planned


def test_a_series_leaves_out_a_term_with_no_finite_value_and_keeps_the_others_styles():
    steps = np.arange(40)
    values = np.column_stack([np.linspace(2, 1, 40), np.full(40, np.nan), np.linspace(5, 4, 40)])
    info = series_info(steps, values, ["a", "never", "c"])
    assert info.terms == ("a", "c") and info.columns == (0, 2)
    assert info.smooth.shape == (40, 2) and info.scale.log


def test_a_long_series_is_thinned_to_its_buckets_with_their_range_and_a_geometric_rolling_mean():
    steps = np.arange(20_000)
    values = np.exp(np.sin(steps / 300.0))[:, None]
    info = series_info(steps, values, ["a"])
    assert len(info.steps) <= MAX_POINTS and len(info.raw_steps) <= MAX_POINTS
    assert info.band and "range per bucket" in info.description
    assert (info.low[:, 0] <= info.high[:, 0]).all()
    assert values.min() <= np.nanmin(info.smooth) and np.nanmax(info.smooth) <= values.max()


def test_a_series_that_crosses_zero_gets_a_symlog_axis_linear_up_to_its_smallest_magnitude():
    values = np.array([[3.0], [-0.25], [0.0], [1.0]])
    info = series_info(np.arange(4), values, ["signed"])
    assert not info.scale.log and info.scale.linear == 0.25
    assert info.description == "as recorded"


def test_shares_past_max_bands_keep_the_largest_and_sum_the_rest_into_one_band():
    count = MAX_BANDS + 4
    rng = np.random.default_rng(0)
    raw = rng.random((30, count)) * np.arange(1, count + 1)
    shares = raw / raw.sum(axis=1, keepdims=True)
    shares[5, 3] = np.nan
    info = shares_info(np.arange(30), shares, [f"t{k}" for k in range(count)], 0.8)
    assert len(info.names) == MAX_BANDS and info.names[-1] == f"the other {count - MAX_BANDS + 1} terms"
    assert info.columns[-1] is None and info.columns[:-1] == tuple(sorted(info.columns[:-1]))
    assert len(info.steps) == 29 and 5 not in info.steps
    np.testing.assert_allclose(info.shares.sum(axis=1), 1.0)


def test_shares_of_one_recorded_step_are_widened_to_a_band():
    info = shares_info(np.array([7]), np.array([[0.25, 0.75]]), ["a", "b"], 0.8)
    assert list(info.steps) == [6.5, 7.5] and info.shares.shape == (2, 2)


def test_end_losses_are_scaled_per_term_so_a_term_starting_at_zero_reads_like_one_at_thousands():
    runs = [("alone", [0.001, 3000.0]), ("weights in force", [0.004, 3500.0]), ("recommended", [None, 3100.0])]
    info = end_loss_info(["kl", "recon"], runs, [0.0, 4000.0])
    assert info.runs == ("alone", "weights in force", "recommended")
    for k in range(2):
        column = np.abs(np.concatenate([info.heights[:, k], info.starts[k:k + 1]]))
        assert np.nanmax(column) == pytest.approx(1.0)
    assert info.ends[1, 1] == 3500.0 and math.isnan(info.ends[2, 0])


def test_the_alpha_curve_keeps_the_drawable_range_and_places_or_names_each_alpha():
    alphas = np.concatenate([[0.0, 1e-20], np.logspace(-12, -1, 50), 1 - np.logspace(-1, -12, 50), [1.0]])
    first_share = alphas / (alphas + (1 - alphas) * 1e-3)
    info = alpha_info(alphas, first_share, suggested=1e-18, current=0.5, terms=["a", "b"], threshold=0.8)
    assert info.alphas.min() >= ALPHA_EDGE and 1 - info.alphas.max() >= ALPHA_EDGE
    marks = {mark.name: mark for mark in info.marks}
    assert marks["suggested"].share is None and marks["suggested"].alpha == 1e-18
    expected = float(np.interp(0.0, np.log(info.alphas / (1 - info.alphas)), info.first_share))
    assert marks["current"].share == pytest.approx(expected)
    at_edges = alpha_info(alphas, first_share, suggested=0.0, current=1.0, terms=["a", "b"], threshold=0.8)
    assert at_edges.marks == () and at_edges.low is None


def test_weights_get_a_log_axis_only_when_they_span_twenty_fold():
    assert weights_info(["a", "b"], [1.0, 1.0], [1.98, 0.02]).log
    narrow = weights_info(["a", "b"], [-1.0, 1.0], [1.5, 0.5])
    assert not narrow.log and list(narrow.current) == [1.0, 1.0]


def test_check_panels_pair_each_term_alone_with_the_same_steps_combined_and_keep_a_skip_reason():
    losses = np.column_stack([np.linspace(3, 1, 50), np.linspace(9, 8, 50)])
    records = [{"term": "b", "status": "pass", "losses": [9.0, 7.0, None, 5.0]},
               {"term": "a", "status": "skipped", "reason": "it reaches no trainable parameter", "losses": []}]
    panels = checks_info(records, ["a", "b"], losses)
    assert [p.term for p in panels] == ["b", "a"]
    alone, combined = panels[0].lines
    assert alone[0] == "alone" and combined[0] == "combined"
    np.testing.assert_array_equal(combined[2], losses[:4, 1])
    assert panels[1].lines == () and panels[1].reason == "it reaches no trainable parameter"


def test_maps_write_their_values_only_while_they_stay_readable():
    assert cosines_info(np.eye(3), ["a", "b", "c"], written_cells=12).written
    assert not cosines_info(np.eye(13), [str(k) for k in range(13)], written_cells=12).written
    layers = {"m1": {"a": 0.2, "b": 0.8}, "m2": {"a": None, "b": 1.0}}
    info = layers_info(layers, ["a", "b"], written_cells=12)
    assert info.rows == ("m1", "m2") and info.columns == ("a", "b") and info.written
    assert math.isnan(info.values[1, 0]) and info.values[0, 1] == 0.8


def test_an_info_that_cannot_be_built_leaves_its_figure_out_with_the_reason():
    def broken():
        raise ValueError("shares of shape (3,) for 2 terms")

    figure = planned("shares", "Share of the shared gradient", "caption", broken)
    assert figure.info is None and figure.note == "could not be drawn: ValueError: shares of shape (3,) for 2 terms"
    assert planned("layers", "Per-layer map", "caption", None, "no per-module gradient recorded").note == (
        "no per-module gradient recorded")
