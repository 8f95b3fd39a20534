"""The one weighted total: weights times terms in the mapping's order, a missing weight at 1 (or as given), a
learned (tensor) weight kept in the graph."""
from __future__ import annotations

import torch

from lossdiag.train.total import weighted_total


def test_the_total_is_the_weighted_sum_of_the_terms():
    terms = {"a": torch.tensor(2.0), "b": torch.tensor(3.0), "c": torch.tensor(-1.0)}
    assert weighted_total(terms, {"a": 0.5, "b": 2.0, "c": 4.0}).item() == 0.5 * 2.0 + 2.0 * 3.0 - 4.0


def test_a_term_without_a_weight_counts_once_unless_told_otherwise():
    terms = {"a": torch.tensor(2.0), "b": torch.tensor(3.0)}
    assert weighted_total(terms, {"a": 2.0}).item() == 7.0
    assert weighted_total(terms).item() == 5.0
    assert weighted_total(terms, {"a": 2.0}, missing=0.0).item() == 4.0


def test_a_learned_weight_gets_its_gradient():
    weight = torch.tensor(0.5, requires_grad=True)
    term = torch.tensor(3.0, requires_grad=True)
    weighted_total({"a": term, "b": torch.tensor(1.0)}, {"a": weight}).backward()
    assert weight.grad.item() == 3.0 and term.grad.item() == 0.5


def test_the_total_is_the_stacked_sum_so_a_repeat_adds_alike():
    terms = {name: torch.tensor(value) for name, value in zip("abcd", [1e8, 1.0, -1e8, 1e-3])}
    expected = torch.stack([1.5 * t for t in terms.values()]).sum()
    assert torch.equal(weighted_total(terms, dict.fromkeys(terms, 1.5)), expected)
