"""Every recorded number against the brute-force reference (plain autograd.grad per term), to 1e-6."""
import math

import pytest
import torch

import lossdiag
from lossdiag.record.gradients import apply_update, reach, shared_statistics, term_gradients, trainable_parameters
from lossdiag.record.shared import discover, module_of
from models import DeepSupervision, TiedThreeHeads, deep_supervision_batch, deep_supervision_terms, tied_batch, \
    tied_terms
from reference import flat_term_gradients, gram, relative_error

CASES = [(DeepSupervision, deep_supervision_terms, deep_supervision_batch),
         (TiedThreeHeads, tied_terms, tied_batch)]


@pytest.mark.parametrize("make_model, make_terms, make_batch", CASES)
def test_norms_gram_and_layers_match_brute_force(make_model, make_terms, make_batch):
    torch.manual_seed(0)
    model = make_model()
    terms = make_terms(model, make_batch())
    layout = discover(model, terms)
    shared = [layout.parameters[i] for i in layout.shared]
    flat = flat_term_gradients(terms, shared)
    expected = gram(flat)
    grads = term_gradients(terms, layout.parameters, keep_graph=True)
    assert reach(grads, layout.names, layout.parameters) == layout
    stats = shared_statistics(grads, layout)

    actual = torch.tensor(stats["gram"], dtype=torch.float64)
    norms = expected.diagonal().sqrt()
    assert relative_error(actual, expected, torch.outer(norms, norms)) < 1e-6
    for k, name in enumerate(terms):
        assert stats["norms"][name] == pytest.approx(float(norms[k]), rel=1e-6)
        reached = [layout.parameters[i] for i in layout.reached[name]]
        full = flat_term_gradients({name: terms[name]}, reached)[name].norm()
        assert stats["norms_all"][name] == pytest.approx(float(full), rel=1e-6)
    for module in layout.shared_modules:
        params = [layout.parameters[i] for i in layout.shared if module_of(layout.names[i]) == module]
        per_module = flat_term_gradients(terms, params)
        for name in terms:
            assert stats["layers"][module][name] == pytest.approx(float(per_module[name].norm()), rel=1e-6, abs=1e-12)


@pytest.mark.parametrize("make_model, make_terms, make_batch", CASES)
def test_update_from_term_gradients_equals_backward_of_the_weighted_total(make_model, make_terms, make_batch):
    torch.manual_seed(0)
    model = make_model()
    terms = make_terms(model, make_batch())
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
    layout = discover(model, terms)
    flat = flat_term_gradients(terms, [layout.parameters[i] for i in layout.shared])
    expected = gram(flat)
    for k, name in enumerate(terms):
        assert first["loss"][name] == pytest.approx(float(terms[name].detach()), rel=1e-6)
        assert first["grad"]["norms"][name] == pytest.approx(math.sqrt(float(expected[k, k])), rel=1e-6)
    assert first["grad"]["weights"] == {"classification": 0.5, "regression": 2.0}
    assert result.summary["shared_parameters"]["names"] == layout.shared_names
