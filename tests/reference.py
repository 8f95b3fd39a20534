"""Brute-force reference: each term's gradient by plain torch.autograd.grad, flattened, in float64."""
from __future__ import annotations

from typing import Mapping, Sequence

import torch


def flat_term_gradients(terms: Mapping[str, torch.Tensor], parameters: Sequence[torch.nn.Parameter]
                        ) -> dict[str, torch.Tensor]:
    """One flat float64 vector per term over `parameters`, zeros where the term does not reach; a complex
    gradient as its real and imaginary parts, so that dot products are Re<g_a, conj(g_b)>."""
    flat = {}
    for name, value in terms.items():
        grads = torch.autograd.grad(value, list(parameters), retain_graph=True, allow_unused=True)
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
