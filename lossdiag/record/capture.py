"""The representation scope's capture: graph hooks that take each term's part of the gradient reaching a
shared activation during the user's own backward, with no extra backward pass."""
from __future__ import annotations

import functools
import math
from typing import Mapping, Optional

import torch

from lossdiag.errors import SpecError


class Capture:
    """One recorded step of the representation scope, filled in by graph hooks while the user's backward runs.

    Each node that consumes the captured output belongs to exactly one term; the gradient it sends to the output
    is that term's part, times the coefficient the user's total gave the term (read by a hook on the term itself).
    A term with weight 0 contributes nothing to that backward, so its gradient is taken now with autograd.grad.
    """

    def __init__(self, terms: Mapping[str, torch.Tensor], weights: Mapping[str, float], output: torch.Tensor,
                 module: str) -> None:
        names = list(terms)
        target = (output.grad_fn, output.output_nr)
        owners = consumers(terms, target)
        for node, owner in owners.items():
            if len(owner) > 1:
                pair = " and ".join(f"'{names[k]}'" for k in sorted(owner)[:2])
                raise SpecError(f"Monitor(scope='representation'): {pair} share {type(node).__name__} on top of "
                                f"'{module}', so their gradients there cannot be told apart; use scope='all' or "
                                f"at= a module whose output they use through separate heads")
        reaching = sorted({k for owner in owners.values() for k in owner})
        self.reaching = {names[k] for k in reaching}
        self._names = names
        self._count = len(names)
        self._sums: list[Optional[torch.Tensor]] = [None] * self._count
        self._scales: list[Optional[torch.Tensor]] = [None] * self._count
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._fired: list[int] = []
        self._gram: Optional[torch.Tensor] = None
        self._settled = False
        self._module = module
        hooked = {k for k in reaching if weights.get(names[k], 1.0) != 0}
        for k in set(reaching) - hooked:
            (gradient,) = torch.autograd.grad(terms[names[k]], output, retain_graph=True)
            self._sums[k] = gradient.to(torch.float64, copy=True)
            self._scales[k] = torch.ones((), dtype=torch.float64, device=gradient.device)
        for node, owner in owners.items():
            (k,) = owner
            if k in hooked:
                positions = [i for i, edge in enumerate(node.next_functions) if edge == target]
                self._watch(node.register_hook, functools.partial(self._on_gradient, k, positions))
        for k in sorted(hooked):
            term = terms[names[k]]
            self._watch(term.grad_fn.register_prehook, functools.partial(self._on_scale, k, term.output_nr))

    def _watch(self, register, hook) -> None:
        index = len(self._fired)
        self._fired.append(0)
        self._handles.append(register(functools.partial(hook, index)))

    def _on_gradient(self, k: int, positions: list[int], index: int, grad_inputs: tuple, grad_outputs: tuple) -> None:
        self._fired[index] += 1
        for i in positions:
            gradient = grad_inputs[i]
            if gradient is None:
                continue
            if self._sums[k] is None:
                self._sums[k] = gradient.to(torch.float64, copy=True)
            else:
                self._sums[k].add_(gradient)

    def _on_scale(self, k: int, output_nr: int, index: int, grad_outputs: tuple) -> None:
        self._fired[index] += 1
        if grad_outputs[output_nr] is not None:
            self._scales[k] = grad_outputs[output_nr].to(torch.float64, copy=True)

    def settle(self, force: bool) -> bool:
        if self._settled:
            return True
        complete = all(count == 1 for count in self._fired)
        if not complete and not force:
            return False
        for handle in self._handles:
            handle.remove()
        self._handles = []
        if complete:
            self._gram = self._gram_matrix()
        self._sums = self._scales = []
        self._settled = True
        return True

    def _gram_matrix(self) -> Optional[torch.Tensor]:
        present = [k for k in range(self._count) if self._sums[k] is not None and self._scales[k] is not None]
        if not present:
            return None
        device = self._sums[present[0]].device
        gram = torch.zeros(self._count, self._count, dtype=torch.float64, device=device)
        stacked = torch.stack([self._sums[k].reshape(-1) for k in present])
        scales = torch.stack([self._scales[k] for k in present])
        where = torch.tensor(present, device=device)
        gram[where.unsqueeze(1), where] = (stacked @ stacked.T) / (scales.unsqueeze(1) * scales.unsqueeze(0))
        return gram

    def device_values(self) -> Optional[torch.Tensor]:
        return None if self._gram is None else self._gram.reshape(-1)

    def result(self, host: list[float]) -> tuple[Optional[dict], list[str]]:
        if self._gram is None:
            return None, []
        count = self._count
        rows = [host[i * count:(i + 1) * count] for i in range(count)]
        norms = {t: math.sqrt(rows[k][k]) if rows[k][k] >= 0 else math.nan for k, t in enumerate(self._names)}
        norms_all = {t: norm if t in self.reaching else math.nan for t, norm in norms.items()}
        return {"gram": rows, "norms": norms, "norms_all": norms_all, "layers": {self._module: dict(norms)}}, []


def consumers(terms: Mapping[str, torch.Tensor], target: tuple) -> dict:
    """The graph nodes that take the target (grad_fn, output_nr) as an input, each with the terms that reach it."""
    owners: dict = {}
    for k, term in enumerate(terms.values()):
        seen: set = set()
        stack = [term.grad_fn] if term.grad_fn is not None else []
        while stack:
            node = stack.pop()
            if node in seen or node is target[0]:
                continue
            seen.add(node)
            for edge in node.next_functions:
                if edge == target:
                    owners.setdefault(node, set()).add(k)
                elif edge[0] is not None:
                    stack.append(edge[0])
    return owners
