"""Per-term gradients: one autograd.grad call per term, their statistics on shared parameters, and the update."""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch

from lossdiag.record.shared import Layout, module_of

TermGrads = dict[str, dict[int, torch.Tensor]]


def term_gradients(terms: Mapping[str, torch.Tensor], layout: Layout, keep_graph: bool = False) -> TermGrads:
    """Each term's gradient on the parameters it reaches: one backward pass per term, none for the total."""
    reaching = [name for name in terms if layout.reached.get(name)]
    grads: TermGrads = {name: {} for name in terms}
    for position, name in enumerate(reaching):
        indices = layout.reached[name]
        retain = keep_graph or position < len(reaching) - 1
        values = torch.autograd.grad(terms[name], [layout.parameters[i] for i in indices],
                                     retain_graph=retain, allow_unused=True)
        grads[name] = {i: g for i, g in zip(indices, values) if g is not None}
    return grads


def shared_statistics(grads: TermGrads, layout: Layout) -> dict:
    """The K x K Gram matrix of the terms' gradients on shared parameters, per-module norms, and full norms.

    One parameter at a time (no flattened copy of the model is ever made): each block in the gradients'
    precision, accumulated across parameters in float64.
    """
    names = list(grads)
    count = len(names)
    device = layout.parameters[0].device if layout.parameters else torch.device("cpu")
    gram = torch.zeros(count, count, dtype=torch.float64, device=device)
    modules = layout.shared_modules
    module_index = {module: m for m, module in enumerate(modules)}
    layer_squares = torch.zeros(len(modules), count, dtype=torch.float64, device=device)
    shared = set(layout.shared)
    for i in layout.shared:
        present = [k for k, name in enumerate(names) if i in grads[name]]
        if not present:
            continue
        stacked = torch.stack([grads[names[k]][i].reshape(-1) for k in present])
        block = (stacked @ stacked.T).double()
        module = module_index[module_of(layout.names[i])]
        if len(present) == count:
            gram += block
            layer_squares[module] += block.diagonal()
        else:
            where = torch.tensor(present, device=device)
            gram[where.unsqueeze(1), where] += block
            layer_squares[module, where] += block.diagonal()
    unshared_squares = [_sum_of_squares({i: g for i, g in grads[name].items() if i not in shared}, device)
                        for name in names]
    full_squares = (torch.stack(unshared_squares) + gram.diagonal()) if names else gram[0]
    gram_rows, layer_rows, full_rows = gram.tolist(), layer_squares.sqrt().tolist(), full_squares.sqrt().tolist()
    return {
        "norms": {name: _sqrt(gram_rows[k][k]) for k, name in enumerate(names)},
        "norms_all": dict(zip(names, full_rows)),
        "gram": gram_rows,
        "layers": {module: dict(zip(names, layer_rows[m])) for m, module in enumerate(modules)},
    }


def _sum_of_squares(term_grads: Mapping[int, torch.Tensor], device: torch.device) -> torch.Tensor:
    if not term_grads:
        return torch.zeros((), dtype=torch.float64, device=device)
    norms = torch._foreach_norm(list(term_grads.values()))
    return torch.stack(norms).double().square().sum()


def _sqrt(value: float) -> float:
    return math.sqrt(value) if value >= 0 else math.nan


def apply_update(grads: TermGrads, weights: Mapping[str, float], layout: Layout) -> None:
    """Set each parameter's .grad to the weighted sum of the terms' gradients, as total.backward() would.

    Consumes the gradients: the first term's tensor (unless it is an expanded view) is reused as the accumulator.
    """
    update: dict[int, torch.Tensor] = {}
    for name, term_grads in grads.items():
        weight = float(weights[name])
        for i, grad in term_grads.items():
            if i in update:
                update[i].add_(grad, alpha=weight)
            else:
                update[i] = _owned(grad) if weight == 1.0 else grad.mul(weight)
    for i, total in update.items():
        parameter = layout.parameters[i]
        if parameter.grad is None:
            parameter.grad = total
        else:
            parameter.grad.add_(total)


def _owned(grad: torch.Tensor) -> torch.Tensor:
    """The gradient itself when it may be written in place; a copy when it is an expanded view (stride 0)."""
    expanded = any(stride == 0 and size > 1 for stride, size in zip(grad.stride(), grad.shape))
    return grad.clone() if expanded else grad


def nonfinite_terms(values: Mapping[str, float], stats: dict | None, names: Sequence[str]) -> list[str]:
    """Terms whose value, or gradient norm on the parameters they reach, is NaN or infinite."""
    bad = []
    for name in names:
        value_bad = not math.isfinite(values[name])
        grad_bad = stats is not None and not math.isfinite(stats["norms_all"][name])
        if value_bad or grad_bad:
            bad.append(name)
    return bad
