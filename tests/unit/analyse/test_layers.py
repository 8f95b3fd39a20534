"""Layer shares from hand-made records: per shared module, each term's share of the median weighted norm there,
by the one definition of a share (a module where a norm is NaN has no shares)."""
from __future__ import annotations

import math

import pytest

from lossdiag.analyse.layers import layer_shares
from lossdiag.analyse.run import parse

NAN = math.nan


def records(layers_per_step: list[dict], weights=(1.0, 1.0)) -> list[dict]:
    header = {"kind": "meta", "step": 0, "terms": ["a", "b"], "weights": {"a": weights[0], "b": weights[1]},
              "shared_modules": ["trunk", "neck"], "term_shared_parameters": {"a": 2, "b": 2},
              "shared_parameters": {"count": 2, "numel": 10, "names": ["trunk.w", "neck.w"]}}
    steps = []
    for step, layers in enumerate(layers_per_step):
        steps.append({"kind": "step", "step": step, "loss": {"a": 1.0, "b": 1.0},
                      "grad": {"norms": {"a": 1.0, "b": 1.0}, "norms_all": {"a": 1.0, "b": 1.0},
                               "weights": {"a": weights[0], "b": weights[1]}, "gram": [[1.0, 0.0], [0.0, 1.0]],
                               "layers": layers}})
    return [header, *steps]


def test_each_module_shares_the_median_weighted_norms_of_the_terms():
    steps = [{"trunk": {"a": 1.0, "b": 3.0}, "neck": {"a": 2.0, "b": 0.0}},
             {"trunk": {"a": 3.0, "b": 1.0}, "neck": {"a": 4.0, "b": 0.0}},
             {"trunk": {"a": 2.0, "b": 2.0}, "neck": {"a": 3.0, "b": 0.0}}]
    shares = layer_shares(parse(records(steps, weights=(1.0, 3.0))))
    assert shares["trunk"] == pytest.approx({"a": 0.25, "b": 0.75})
    assert shares["neck"] == {"a": 1.0, "b": 0.0}


def test_a_module_where_a_term_is_never_finite_or_every_norm_is_zero_has_no_shares():
    steps = [{"trunk": {"a": NAN, "b": 1.0}, "neck": {"a": 0.0, "b": 0.0}}]
    shares = layer_shares(parse(records(steps)))
    assert all(math.isnan(v) for module in ("trunk", "neck") for v in shares[module].values())
