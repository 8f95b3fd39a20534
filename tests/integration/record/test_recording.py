"""Every recorded number against the brute-force reference (reference.py: plain autograd.grad per term), on every
shared small model (the `architecture` fixture)."""
import pytest
import torch

import lossdiag
from lossdiag.record.gradients import apply_update, reach, shared_statistics, term_gradients, trainable_parameters
from lossdiag.record.shared import discover
from models import DeepSupervision, deep_supervision_batch, deep_supervision_terms
from reference import assert_matches, step_reference


def test_norms_gram_and_layers_match_brute_force(architecture):
    torch.manual_seed(0)
    model = architecture.build()
    terms = architecture.terms(model, architecture.batch())
    layout = discover(model, terms)
    grads = term_gradients(terms, layout.parameters, keep_graph=True)
    assert reach(grads, layout.names, layout.parameters) == layout
    expected = step_reference(terms, model)
    assert layout.shared_names == expected["shared_names"]
    assert_matches(shared_statistics(grads, layout), expected, architecture.name)


def test_update_from_term_gradients_equals_backward_of_the_weighted_total(architecture):
    torch.manual_seed(0)
    model = architecture.build()
    terms = architecture.terms(model, architecture.batch())
    weights = {name: 0.1 * (k + 1) for k, name in enumerate(terms)}
    total = sum(weights[name] * value for name, value in terms.items())
    expected = torch.autograd.grad(total, list(model.parameters()), retain_graph=True, allow_unused=True)
    parameters = trainable_parameters(model)[1]
    apply_update(term_gradients(terms, parameters), weights, parameters)
    for parameter, reference in zip(model.parameters(), expected):
        if reference is None:
            assert parameter.grad is None
        else:
            torch.testing.assert_close(parameter.grad, reference, rtol=1e-6, atol=1e-7)


def test_profile_records_equal_the_reference_on_its_first_step():
    batch = deep_supervision_batch(seed=3)
    result = lossdiag.profile(DeepSupervision, [batch], deep_supervision_terms, steps=2,
                              weights={"classification": 0.5, "regression": 2.0}, no_checks=True)
    first = next(r for r in result.records if r.get("kind") == "step")
    torch.manual_seed(result.diagnosis.config.seed)
    model = DeepSupervision()
    terms = deep_supervision_terms(model, batch)
    expected = step_reference(terms, model)
    assert_matches(first["grad"], expected, "the profile's first step")
    assert first["loss"] == pytest.approx({name: float(value.detach()) for name, value in terms.items()}, rel=1e-6)
    assert first["grad"]["weights"] == {"classification": 0.5, "regression": 2.0}
    assert result.summary["shared_parameters"]["names"] == expected["shared_names"]
