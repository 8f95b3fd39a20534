"""Per-term gradients: one autograd.grad call per term, their statistics on shared parameters, and the update."""
from __future__ import annotations

import math
from collections import Counter
from typing import Iterator, Mapping, Optional, Sequence

import torch

from lossdiag.record.buffers import BufferGuard
from lossdiag.record.shared import Layout, module_of

TermGrads = dict[str, dict[int, torch.Tensor]]

LOW_PRECISION = (torch.float16, torch.bfloat16)
CHUNK_ELEMENTS = 1 << 21
"""At most this many gradient elements (all terms together) are copied at once to form a Gram block."""


def trainable_parameters(model: torch.nn.Module) -> tuple[tuple[str, ...], tuple[torch.nn.Parameter, ...]]:
    """The model's parameters that train now (requires_grad), with their names: read again on every recorded step,
    so that layers unfrozen or frozen mid-training are measured as they are."""
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    return tuple(n for n, _ in named), tuple(p for _, p in named)


def term_gradients(terms: Mapping[str, torch.Tensor], parameters: Sequence[torch.nn.Parameter],
                   keep_graph: bool = False, guard: Optional[BufferGuard] = None) -> TermGrads:
    """Each term's gradient on the parameters it reaches in this step's graph: one backward pass per term.

    Every parameter is asked for (allow_unused), so which ones a term reaches is read from this step's graph:
    routing, dropped layers and unfrozen layers are measured as they happen. `guard` settles the buffers a pass
    changed (activation checkpointing re-runs the forward).
    """
    grads: TermGrads = {name: {} for name in terms}
    training = [i for i, p in enumerate(parameters) if p.requires_grad]
    live = [name for name in terms if terms[name].requires_grad] if training else []
    for position, name in enumerate(live):
        retain = keep_graph or position < len(live) - 1
        values = torch.autograd.grad(terms[name], [parameters[i] for i in training], retain_graph=retain,
                                     allow_unused=True)
        grads[name] = {i: g for i, g in zip(training, values) if g is not None}
        if guard is not None:
            guard.settle()
    return grads


def reach(grads: TermGrads, names: Sequence[str], parameters: Sequence[torch.nn.Parameter]) -> Layout:
    """This step's layout: which parameters each term's gradient reached, shared where two or more did."""
    counts: Counter = Counter(i for term_grads in grads.values() for i in term_grads)
    reached = {term: tuple(sorted(term_grads)) for term, term_grads in grads.items()}
    shared = tuple(sorted(i for i, count in counts.items() if count >= 2))
    return Layout(tuple(names), tuple(parameters), reached, shared)


def recorded_step(model: torch.nn.Module, terms: Mapping[str, torch.Tensor], weights: Mapping[str, float]) -> dict:
    """The profile's recorded step: each term's gradient, their statistics, and the update total.backward()
    would give, set on .grad, from the same gradients (K backward passes, none for the total)."""
    names, parameters = trainable_parameters(model)
    grads = term_gradients(terms, parameters, guard=BufferGuard(model, keep_first=True))
    stats = shared_statistics(grads, reach(grads, names, parameters))
    apply_update(grads, weights, parameters)
    return stats


def shared_statistics(grads: TermGrads, layout: Layout) -> dict:
    """The K x K Gram matrix of the terms' gradients on shared parameters, per-module norms, and full norms.

    One parameter at a time, in pieces of at most CHUNK_ELEMENTS (no flattened copy of the model is ever made,
    so a recorded step holds little more than the K gradients): products of complex gradients are the real part
    of <g_a, conj(g_b)>, low-precision ones are accumulated in float32, and the sum over parameters in float64.
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
        block = gram_block([grads[names[k]][i] for k in present])
        module = module_index[module_of(layout.names[i])]
        if len(present) == count:
            gram += block
            layer_squares[module] += block.diagonal()
        else:
            where = torch.tensor(present, device=device)
            gram[where.unsqueeze(1), where] += block
            layer_squares[module, where] += block.diagonal()
    unshared_squares = [_sum_of_squares([g for i, g in grads[name].items() if i not in shared], device)
                        for name in names]
    full_squares = (torch.stack(unshared_squares) + gram.diagonal()) if names else gram[0]
    gram_rows, layer_rows, full_rows = gram.tolist(), layer_squares.sqrt().tolist(), full_squares.sqrt().tolist()
    return {
        "norms": {name: _sqrt(gram_rows[k][k]) for k, name in enumerate(names)},
        "norms_all": dict(zip(names, full_rows)),
        "gram": gram_rows,
        "layers": {module: dict(zip(names, layer_rows[m])) for m, module in enumerate(modules)},
    }


def gram_block(gradients: Sequence[torch.Tensor]) -> torch.Tensor:
    """The float64 matrix of the real dot products between gradients of one parameter, piece by piece."""
    real = [_as_real(g) for g in gradients]
    dtype = torch.float64 if real[0].dtype == torch.float64 else torch.float32
    block = torch.zeros(len(real), len(real), dtype=torch.float64, device=real[0].device)
    for pieces in zip(*(_pieces(g, CHUNK_ELEMENTS // len(real)) for g in real)):
        stacked = torch.stack([piece.to(dtype) for piece in pieces])
        block += (stacked @ stacked.T).double()
    return block


def _as_real(gradient: torch.Tensor) -> torch.Tensor:
    """A complex gradient as its real and imaginary parts (a dot product of these is Re<g_a, conj(g_b)>)."""
    if gradient.is_complex():
        return torch.view_as_real(gradient.resolve_conj())
    return gradient


def _pieces(gradient: torch.Tensor, limit: int) -> Iterator[torch.Tensor]:
    """The gradient as flat pieces of about `limit` elements along its first dimension (views when contiguous)."""
    if gradient.dim() == 0:
        yield gradient.reshape(1)
        return
    rows = gradient.shape[0]
    step = max(1, limit // max(1, gradient[0].numel())) if rows else 1
    for start in range(0, rows, step):
        yield gradient[start:start + step].reshape(-1)


def _sum_of_squares(gradients: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    """The sum of the gradients' squares in float64; low-precision norms taken in float32, so past float16's
    range they still read finite."""
    total = torch.zeros((), dtype=torch.float64, device=device)
    low = [g for g in gradients if g.dtype in LOW_PRECISION]
    high = [g for g in gradients if g.dtype not in LOW_PRECISION]
    for group, dtype in ((low, torch.float32), (high, None)):
        if group:
            norms = torch._foreach_norm(group, 2, dtype=dtype)
            total = total + torch.stack([norm.double() for norm in norms]).square().sum()
    return total


def _sqrt(value: float) -> float:
    return math.sqrt(value) if value >= 0 else math.nan


def apply_update(grads: TermGrads, weights: Mapping[str, float], parameters: Sequence[torch.nn.Parameter]) -> None:
    """Set each parameter's .grad to the weighted sum of the terms' gradients, as total.backward() would.

    Consumes the gradients: a term's gradient is reused as the accumulator only when no other gradient shares
    its memory (autograd returns one tensor for both parameters of `W + D`, or views of one buffer) and it is
    not an expanded view; otherwise the sum starts from a copy.
    """
    owners: Counter = Counter(_storage(g) for term_grads in grads.values() for g in term_grads.values())
    update: dict[int, torch.Tensor] = {}
    for name, term_grads in grads.items():
        weight = float(weights[name])
        for i, grad in term_grads.items():
            if i in update:
                update[i].add_(grad, alpha=weight)
            elif weight == 1.0:
                update[i] = grad if owners[_storage(grad)] == 1 and not _expanded(grad) else grad.clone()
            else:
                update[i] = grad.mul(weight)
    for i, total in update.items():
        parameter = parameters[i]
        if parameter.grad is None:
            parameter.grad = total
        else:
            parameter.grad.add_(total)


def _storage(grad: torch.Tensor) -> int:
    return grad.untyped_storage().data_ptr()


def _expanded(grad: torch.Tensor) -> bool:
    """Whether the tensor is an expanded view (stride 0), so that writing one element writes several."""
    return any(stride == 0 and size > 1 for stride, size in zip(grad.stride(), grad.shape))


def nonfinite_terms(values: Mapping[str, float], stats: dict | None, names: Sequence[str]) -> list[str]:
    """Terms whose value, or gradient norm on the parameters they reach, is NaN or infinite."""
    bad = []
    for name in names:
        value_bad = not math.isfinite(values[name])
        grad_bad = stats is not None and not math.isfinite(stats["norms_all"][name])
        if value_bad or grad_bad:
            bad.append(name)
    return bad
