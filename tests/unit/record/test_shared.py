"""Shared-parameter discovery from the terms' autograd graphs."""
import torch

from lossdiag.record.shared import discover
from models import DeepSupervision, TiedThreeHeads, deep_supervision_batch, deep_supervision_terms, tied_batch, \
    tied_terms


def _names(layout, term):
    return {layout.names[i] for i in layout.reached[term]}


def test_intermediate_output_shares_only_the_layers_before_it():
    model = DeepSupervision()
    layout = discover(model, deep_supervision_terms(model, deep_supervision_batch()))
    assert layout.shared_names == ["block_1.0.weight", "block_1.0.bias"]
    assert _names(layout, "classification") == {"block_1.0.weight", "block_1.0.bias", "head_1.weight", "head_1.bias"}
    assert "block_2.0.weight" in _names(layout, "regression") and "head_1.weight" not in _names(layout, "regression")
    assert layout.shared_numel == 6 * 16 + 16
    assert layout.shared_modules == ["block_1.0"]


def test_parameter_used_twice_is_counted_once_and_unused_ones_are_not_reached():
    model = TiedThreeHeads()
    layout = discover(model, tied_terms(model, tied_batch()))
    assert layout.shared_names == ["stem.weight", "stem.bias", "trunk.weight", "trunk.bias"]
    for term in "abc":
        assert len(layout.reached[term]) == len(set(layout.reached[term])) == 6
    assert not any(name.startswith("unused") for name in layout.shared_names)


def test_detached_and_constant_terms_reach_nothing():
    model = DeepSupervision()
    x, labels, target = deep_supervision_batch()
    logits, value = model(x)
    terms = {"live": value.pow(2).mean(), "detached": logits.detach().pow(2).mean(),
             "constant": torch.tensor(3.0)}
    layout = discover(model, terms)
    assert layout.reached["detached"] == () and layout.reached["constant"] == ()
    assert layout.shared == ()
    assert layout.describe()["term_shared_parameters"] == {"live": 0, "detached": 0, "constant": 0}


def test_frozen_parameters_are_not_shared():
    model = DeepSupervision()
    model.block_1[0].weight.requires_grad_(False)
    layout = discover(model, deep_supervision_terms(model, deep_supervision_batch()))
    assert layout.shared_names == ["block_1.0.bias"]
