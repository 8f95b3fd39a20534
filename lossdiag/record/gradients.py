"""Per-term gradients: one autograd.grad call per term, their statistics on shared parameters, and the update."""
from __future__ import annotations

import functools
import math
from collections import Counter
from typing import Iterable, Iterator, Mapping, Optional, Sequence

import torch

from lossdiag.record.buffers import BufferGuard
from lossdiag.record.shared import Layout, module_of

TermGrads = dict[str, dict[int, torch.Tensor]]

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


def recorded_step(model: torch.nn.Module, terms: Mapping[str, torch.Tensor], weights: Mapping[str, float]
                  ) -> tuple[dict, Layout]:
    """The profile's recorded step: each term's gradient, their statistics, and the update total.backward()
    would give, set on .grad, from the same gradients (K backward passes, none for the total); and the step's
    layout, which parameters each term reached."""
    names, parameters = trainable_parameters(model)
    grads = term_gradients(terms, parameters, guard=BufferGuard(model, keep_first=True))
    layout = reach(grads, names, parameters)
    stats = shared_statistics(grads, layout)
    apply_update(grads, weights, parameters)
    return stats, layout


def shared_statistics(grads: TermGrads, layout: Layout) -> dict:
    """The K x K Gram matrix of the terms' gradients on shared parameters, per-module norms, full norms, and how
    many of this step's shared parameters each term reaches.

    One parameter at a time, in pieces of at most CHUNK_ELEMENTS (no flattened copy of the model is ever made,
    so a recorded step holds little more than the K gradients): products of complex gradients are the real part
    of <g_a, conj(g_b)>, low-precision ones are taken in float32, and the sum over pieces and parameters in
    float64. The squares are taken as they are first (fast); where a term's sum of squares is not finite or
    below its underflow bound (a float32 norm past 1.8e19 squares past 3.4e38, one below 1e-19 squares to 0),
    everything is taken again with that term's gradients divided by its scale (term_scales), so the term is
    read as it is, at the cost of a second pass on the steps that need one.
    """
    names = list(grads)
    device = layout.parameters[0].device if layout.parameters else torch.device("cpu")
    gram, layer_squares, full_squares = _squares(grads, layout, device)
    suspect = [k for k, (name, value) in enumerate(zip(names, full_squares.tolist()))
               if not (math.isfinite(value) and value >= _underflow_bound(grads[name].values()))]
    if suspect:
        scales = torch.ones(len(names), dtype=torch.float64, device=device)
        scales[suspect] = term_scales([list(grads[names[k]].values()) for k in suspect], device)
        if bool((scales != 1).any()):
            gram, layer_squares, full_squares = _squares(grads, layout, device, scales)
    gram_rows, layer_rows, full_rows = gram.tolist(), layer_squares.sqrt().tolist(), full_squares.sqrt().tolist()
    reaching = layout.term_shared_counts
    return {
        "norms": {name: _sqrt(gram_rows[k][k]) for k, name in enumerate(names)},
        "norms_all": dict(zip(names, full_rows)),
        "gram": gram_rows,
        "layers": {module: dict(zip(names, layer_rows[m])) for m, module in enumerate(layout.shared_modules)},
        "term_shared_parameters": {name: reaching.get(name, 0) for name in names},
    }


def _squares(grads: TermGrads, layout: Layout, device: torch.device,
             scales: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The float64 Gram matrix on shared parameters, squared norms per (shared module, term) and each term's
    squared norm on every parameter it reaches; with `scales` (one per term), each term's gradients are divided
    by its scale before they are multiplied and the scales multiplied back after the sums."""
    names = list(grads)
    count = len(names)
    columns = ({dtype: scales.to(dtype).unsqueeze(1) for dtype in (torch.float32, torch.float64)}
               if scales is not None else None)
    gram = torch.zeros(count, count, dtype=torch.float64, device=device)
    module_index = {module: m for m, module in enumerate(layout.shared_modules)}
    layer_squares = torch.zeros(len(module_index), count, dtype=torch.float64, device=device)
    shared = set(layout.shared)
    for i in layout.shared:
        present = [k for k, name in enumerate(names) if i in grads[name]]
        if not present:
            continue
        module = module_index[module_of(layout.names[i])]
        divisors = columns[_working_dtype(grads[names[present[0]]][i].dtype)] if columns else None
        if len(present) == count:
            block = gram_block([grads[name][i] for name in names], divisors)
            gram += block
            layer_squares[module] += block.diagonal()
        else:
            where = torch.tensor(present, device=device)
            block = gram_block([grads[names[k]][i] for k in present],
                               divisors[where] if divisors is not None else None)
            gram[where.unsqueeze(1), where] += block
            layer_squares[module, where] += block.diagonal()
    unshared_squares = [_sum_of_squares([g for i, g in grads[name].items() if i not in shared],
                                        scales[k] if scales is not None else None, device)
                        for k, name in enumerate(names)]
    if scales is not None:
        gram *= torch.outer(scales, scales)
        layer_squares *= scales.square()
        unshared_squares = [value * scale for value, scale in zip(unshared_squares, scales.square())]
    full_squares = (torch.stack(unshared_squares) + gram.diagonal()) if names else gram[0]
    return gram, layer_squares, full_squares


UNDERFLOW_BOUND = {dtype: torch.finfo(dtype).tiny / torch.finfo(dtype).eps for dtype in (torch.float32, torch.float64)}
"""Per gradient element, by working dtype, the least sum of squares trusted without scaling (float32: 9.9e-32,
float64: 1.0e-292). A product that underflows loses at most half the dtype's smallest subnormal, tiny * eps, so n
elements lose at most n * tiny * eps: at or above n * tiny / eps, that is eps**2 of the sum, below its rounding."""


def _underflow_bound(gradients: Iterable[torch.Tensor]) -> float:
    """The least sum of squares of these gradients that underflow cannot have changed (UNDERFLOW_BOUND per
    element, a complex element counting as two)."""
    return sum(g.numel() * (2 if g.is_complex() else 1) * UNDERFLOW_BOUND[_working_dtype(g.dtype)]
               for g in gradients)


def term_scales(gradients: Sequence[Sequence[torch.Tensor]], device: torch.device) -> torch.Tensor:
    """Per term, the power of two at or below the largest |element| of its gradients, in float64 (1 for a term
    with none, whose gradients are all 0, or whose largest element is not finite, so that its products stay inf
    or NaN)."""
    largest = []
    for term in gradients:
        ends = [end for g in term if g.numel() for end in torch.aminmax(_as_real(g))]
        largest.append(torch.stack(ends).abs().max().double() if ends else torch.zeros((), dtype=torch.float64,
                                                                                       device=device))
    return powers_of_two(torch.stack(largest)) if largest else torch.ones(0, dtype=torch.float64, device=device)


def powers_of_two(largest: torch.Tensor) -> torch.Tensor:
    """The power of two at or below each value (which divides exactly and, for a value in a dtype's range, is in
    that range too: 2**127 for float32's largest), 1 for a value that is 0 or not finite."""
    usable = torch.isfinite(largest) & (largest > 0)
    exponents = torch.frexp(torch.where(usable, largest, 1.0)).exponent
    return torch.pow(2.0, exponents.double() - 1)


def gram_block(gradients: Sequence[torch.Tensor], divisors: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The float64 matrix of the real dot products between gradients of one parameter, piece by piece; with
    `divisors` (a column in the working dtype), each divided by its term's scale first, so that no product
    overflows or underflows in the working dtype."""
    real = [_as_real(g) for g in gradients]
    dtype = _working_dtype(real[0].dtype)
    block = torch.zeros(len(real), len(real), dtype=torch.float64, device=real[0].device)
    for pieces in zip(*(_pieces(g, CHUNK_ELEMENTS // len(real)) for g in real)):
        rows = torch.stack([piece.to(dtype) for piece in pieces])
        if divisors is not None:
            rows.div_(divisors)
        block += (rows @ rows.T).double()
    return block


def _working_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype products are taken in: float64 for float64 gradients, float32 for every other one."""
    return torch.float64 if dtype in (torch.float64, torch.complex128) else torch.float32


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
    if gradient.numel() == 0:
        return
    rows = gradient.shape[0]
    step = max(1, limit // max(1, gradient[0].numel())) if rows else 1
    for start in range(0, rows, step):
        yield gradient[start:start + step].reshape(-1)


def _sum_of_squares(gradients: list[torch.Tensor], scale: Optional[torch.Tensor],
                    device: torch.device) -> torch.Tensor:
    """The sum of the gradients' squares in float64. Without `scale`, from their norms in one fused call (taken in
    float32 for low-precision gradients); with it, of the gradients divided by `scale`, in pieces of at most
    CHUNK_ELEMENTS (small gradients joined into one piece, large ones split)."""
    total = torch.zeros((), dtype=torch.float64, device=device)
    real = [_as_real(g) for g in gradients]
    if scale is None:
        for dtype in dict.fromkeys(g.dtype for g in real):
            norms = torch._foreach_norm([g for g in real if g.dtype == dtype], 2, dtype=_working_dtype(dtype))
            total += torch.stack(norms).double().square().sum()
        return total
    for piece in _joined_pieces(real):
        piece.div_(scale.to(piece.dtype))
        total += piece.dot(piece).double()
    return total


def _joined_pieces(gradients: list[torch.Tensor]) -> Iterator[torch.Tensor]:
    """The gradients' elements as fresh flat tensors of at most CHUNK_ELEMENTS, in their working dtype."""
    waiting: list[torch.Tensor] = []
    size = 0
    for gradient in gradients:
        for piece in _pieces(gradient, CHUNK_ELEMENTS):
            if waiting and size + piece.numel() > CHUNK_ELEMENTS:
                yield _joined(waiting)
                waiting, size = [], 0
            waiting.append(piece)
            size += piece.numel()
    if waiting:
        yield _joined(waiting)


def _joined(pieces: list[torch.Tensor]) -> torch.Tensor:
    dtype = _working_dtype(functools.reduce(torch.promote_types, [piece.dtype for piece in pieces]))
    return torch.cat([piece.to(dtype) for piece in pieces])


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
