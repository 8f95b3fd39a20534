"""Brute-force reference: each term's gradient by plain torch.autograd.grad, flattened, in float64."""
from __future__ import annotations

import itertools
import math
from typing import Mapping, Sequence

import torch
import torch.nn as nn

from lossdiag.record.shared import module_of

TOLERANCE = 1e-5


def flat_term_gradients(terms: Mapping[str, torch.Tensor], parameters: Sequence[torch.nn.Parameter]
                        ) -> dict[str, torch.Tensor]:
    """One flat float64 vector per term over `parameters`, zeros where the term does not reach (everywhere for a
    constant term); a complex gradient as its real and imaginary parts, so that dot products are
    Re<g_a, conj(g_b)>."""
    flat = {}
    for name, value in terms.items():
        grads = torch.autograd.grad(value, list(parameters), retain_graph=True, allow_unused=True) \
            if value.requires_grad else [None] * len(parameters)
        flat[name] = torch.cat([_real(torch.zeros_like(p) if g is None else g).reshape(-1).double()
                                for p, g in zip(parameters, grads)])
    return flat


def _real(tensor: torch.Tensor) -> torch.Tensor:
    return torch.view_as_real(tensor.resolve_conj()) if tensor.is_complex() else tensor


def gram(flat: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The K x K matrix of dot products between the flat gradients."""
    stacked = torch.stack(list(flat.values()))
    return stacked @ stacked.T


def relative_error(actual: torch.Tensor, expected: torch.Tensor, scale: torch.Tensor) -> float:
    """Largest |actual - expected| / scale."""
    return float(((actual - expected).abs() / scale).max())


def reached_parameters(terms: Mapping[str, torch.Tensor], params: Sequence[torch.nn.Parameter]) -> dict[str, list[int]]:
    """The indices of the parameters each term's graph reaches, by plain autograd.grad."""
    reached = {}
    for name, value in terms.items():
        grads = torch.autograd.grad(value, list(params), retain_graph=True, allow_unused=True) if value.requires_grad \
            else [None] * len(params)
        reached[name] = [i for i, g in enumerate(grads) if g is not None]
    return reached


def shared_gram(terms: dict[str, torch.Tensor], model: nn.Module) -> torch.Tensor:
    """The K x K Gram matrix over the trainable parameters two or more terms reach in this step's graph."""
    return step_reference(terms, model)["gram"]


def assert_gram_matches(actual: Sequence[Sequence[float]], expected: torch.Tensor, where: str = "") -> None:
    """A recorded Gram matrix equals the reference, each entry within TOLERANCE of the product of the two norms."""
    norms = expected.diagonal().sqrt()
    error = relative_error(torch.tensor(actual, dtype=torch.float64), expected, torch.outer(norms, norms).clamp_min(1e-30))
    assert error < TOLERANCE, (where, error)


def step_reference(terms: dict[str, torch.Tensor], model: nn.Module) -> dict:
    """Every number a recorded step reports, by brute force: one autograd.grad per term over every trainable
    parameter, flattened in float64."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    reached = reached_parameters(terms, params)
    shared = [i for i in range(len(params)) if sum(i in r for r in reached.values()) >= 2]
    g = gram(flat_term_gradients(terms, [params[i] for i in shared])) if shared else None
    names = list(terms)
    norms = {t: float(g[k, k].sqrt()) if g is not None else 0.0 for k, t in enumerate(names)}
    norms_all = {t: float(flat_term_gradients({t: terms[t]}, [params[i] for i in reached[t]])[t].norm())
                 if reached[t] else 0.0 for t in names}
    layers = {}
    for module in dict.fromkeys(module_of(named[i][0]) for i in shared):
        inside = [params[i] for i in shared if module_of(named[i][0]) == module]
        layers[module] = {t: float(v.norm()) for t, v in flat_term_gradients(terms, inside).items()}
    return {"gram": g, "norms": norms, "norms_all": norms_all, "layers": layers,
            "reaches_shared": {t: any(i in shared for i in reached[t]) for t in names},
            "shared_names": [named[i][0] for i in shared]}


def shares_and_cosines(expected: dict, weights: Mapping[str, float]) -> tuple[dict[str, float], dict[tuple, float]]:
    """From step_reference's numbers: each term's share of the weighted gradient on the step's shared parameters
    (0 for a term that reaches none of them on this step) and the cosine of each pair that both reach them."""
    reaching = [t for t, reaches in expected["reaches_shared"].items() if reaches]
    weighted = {t: abs(weights[t]) * expected["norms"][t] for t in reaching}
    total = sum(weighted.values())
    shares = {t: (weighted[t] / total if total > 0 else math.nan) if t in weighted else 0.0 for t in expected["norms"]}
    names = list(expected["norms"])
    cosines = {}
    for a, b in itertools.combinations(reaching, 2):
        i, j = names.index(a), names.index(b)
        g = expected["gram"]
        denominator = math.sqrt(float(g[i, i] * g[j, j]))
        cosines[(a, b)] = float(g[i, j]) / denominator if denominator > 0 else math.nan
    return shares, cosines


def close(actual: float, expected: float, scale: float) -> bool:
    return abs(actual - expected) <= TOLERANCE * max(abs(expected), scale, 1e-30)


def assert_matches(stats: dict, expected: dict, where: str) -> None:
    names = list(expected["norms"])
    biggest = max([*expected["norms"].values(), *expected["norms_all"].values(), 1e-30])
    if expected["gram"] is None:
        assert not any(stats["norms"].values()), where
    else:
        assert_gram_matches(stats["gram"], expected["gram"], where)
    for t in names:
        assert close(stats["norms"][t], expected["norms"][t], 1e-6 * biggest), (where, t)
        assert close(stats["norms_all"][t], expected["norms_all"][t], 1e-6 * biggest), (where, t)
    assert set(stats["layers"]) == set(expected["layers"]), where
    for module, row in expected["layers"].items():
        for t in names:
            assert close(stats["layers"][module][t], row[t], 1e-6 * biggest), (where, module, t)
