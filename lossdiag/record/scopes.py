"""What a Monitor measures on a recorded step: every shared parameter (exact, the default), the last shared
layer, or the gradient with respect to a shared representation (both proxies, labelled as such)."""
from __future__ import annotations

import functools
import math
from typing import Mapping, Optional, Protocol

import torch

from lossdiag.errors import SpecError
from lossdiag.record.gradients import shared_statistics, term_gradients
from lossdiag.record.shared import Layout, module_of

ALL, LAST_LAYER, REPRESENTATION = "all", "last-layer", "representation"
SCOPES = (ALL, LAST_LAYER, REPRESENTATION)


class Measurement(Protocol):
    """One recorded step's per-term gradient statistics, possibly still on the device or still being captured."""

    def settle(self, force: bool) -> bool:
        """Finish the measurement if its gradients are all in (or, with force, give up on missing ones)."""

    def device_values(self) -> Optional[torch.Tensor]:
        """Numbers to bring to the host in the Monitor's next batched transfer, flat; None when there are none."""

    def result(self, host: list[float]) -> tuple[Optional[dict], list[str]]:
        """The step's 'grad' record (None when nothing was measured) and the terms whose gradient was non-finite."""


class Measured:
    """Statistics already on the host: the parameter scopes compute them on their recorded step."""

    def __init__(self, stats: Optional[dict], nonfinite: list[str]) -> None:
        self._stats = stats
        self._nonfinite = nonfinite

    def settle(self, force: bool) -> bool:
        return True

    def device_values(self) -> Optional[torch.Tensor]:
        return None

    def result(self, host: list[float]) -> tuple[Optional[dict], list[str]]:
        return self._stats, self._nonfinite


class Scope:
    """Every trainable parameter two or more terms reach: exact, K extra backward passes on a recorded step."""

    name = ALL
    proxy = False

    def __init__(self) -> None:
        self.layout: Optional[Layout] = None
        self.measured: Optional[Layout] = None

    def bind(self, layout: Layout, terms: Mapping[str, torch.Tensor]) -> None:
        """Fix what is measured, from the layout discovered on the first call's graphs."""
        self.layout = layout
        self.measured = self.select(layout, terms)

    def select(self, layout: Layout, terms: Mapping[str, torch.Tensor]) -> Layout:
        """The parameters this scope measures: every shared one."""
        return layout

    def note(self) -> Optional[str]:
        """For a proxy, what it measures and how it can mislead; None for the exact scope."""
        return None

    def describe(self) -> dict:
        """The header's description of what was measured (shared parameters, modules, per-term counts)."""
        description = self.measured.describe()
        description["term_parameters"] = {t: len(indices) for t, indices in self.layout.reached.items()}
        return description

    def measure(self, terms: Mapping[str, torch.Tensor], weights: Mapping[str, float]) -> Measurement:
        """Each term's gradient on the measured parameters, keeping the graph for the user's backward."""
        measured = trainable(self.measured)
        stats = shared_statistics(term_gradients(terms, measured, keep_graph=True), measured)
        unmeasured = [t for t in terms if not measured.reached.get(t)]
        if self.proxy:
            stats["norms_all"].update({term: math.nan for term in unmeasured})
        bad = [t for t in terms if t not in unmeasured and not math.isfinite(stats["norms_all"][t])]
        return Measured(stats, bad)

    def arm(self, next_recorded: bool) -> None:
        """Prepare for the next step (only the representation scope needs to)."""

    def close(self) -> None:
        """Remove every hook this scope registered."""


def trainable(layout: Layout) -> Layout:
    """The layout without the parameters frozen since it was discovered (requires_grad now False)."""
    if all(layout.parameters[i].requires_grad for indices in layout.reached.values() for i in indices):
        return layout
    keep = {i for i, p in enumerate(layout.parameters) if p.requires_grad}
    reached = {t: tuple(i for i in indices if i in keep) for t, indices in layout.reached.items()}
    return Layout(layout.names, layout.parameters, reached, tuple(i for i in layout.shared if i in keep))


class LastLayerScope(Scope):
    """The parameters of the last shared layer only (GradNorm's cheap variant): a proxy.

    A term that leaves the trunk before that layer (an intermediate output) reads zero there.
    """

    name = LAST_LAYER
    proxy = True

    def __init__(self) -> None:
        super().__init__()
        self.module: Optional[str] = None

    def select(self, layout: Layout, terms: Mapping[str, torch.Tensor]) -> Layout:
        self.module = last_shared_module(terms, layout)
        keep = tuple(i for i in layout.shared if module_of(layout.names[i]) == self.module)
        reached = {t: tuple(i for i in indices if i in keep) for t, indices in layout.reached.items()}
        return Layout(layout.names, layout.parameters, reached, keep)

    def note(self) -> Optional[str]:
        return (f"gradients on the last shared layer '{self.module or '(none)'}' only, not on every shared "
                f"parameter; a term that leaves the shared layers before it reads zero there")


def last_shared_module(terms: Mapping[str, torch.Tensor], layout: Layout) -> Optional[str]:
    """The shared module used last in the forward pass: its parameter feeds the most recently created graph node."""
    shared = {id(layout.parameters[i]): i for i in layout.shared}
    latest: dict[int, int] = {}
    seen: set = set()
    stack = [t.grad_fn for t in terms.values() if t.grad_fn is not None]
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        for child, _ in node.next_functions:
            if child is None:
                continue
            index = shared.get(id(getattr(child, "variable", None)))
            if index is not None:
                latest[index] = max(latest.get(index, -1), node._sequence_nr())
            stack.append(child)
    if not latest:
        return None
    return module_of(layout.names[max(latest, key=lambda i: (latest[i], i))])


class RepresentationScope(Scope):
    """Gradients with respect to the output of one module every term uses (MGDA-UB's proxy), at no extra backward.

    The output is captured by a forward hook on recorded steps only; each term's part of its gradient is taken
    from hooks on the graph during the user's own backward, divided by the coefficient that backward gave the term.
    """

    name = REPRESENTATION
    proxy = True

    def __init__(self, model: torch.nn.Module, at: torch.nn.Module | str) -> None:
        super().__init__()
        self.module, self.module_name = resolve_module(model, at)
        self._outputs: list = []
        self._handle: Optional[torch.utils.hooks.RemovableHandle] = None
        self._reaching: set[str] = set()
        self._numel = 0
        self._measured_once = False
        self.arm(True)

    def note(self) -> Optional[str]:
        return (f"gradients with respect to the output of '{self.module_name}', not its parameters; shares and "
                f"cosines there can differ from the exact ones, even in sign")

    def describe(self) -> dict:
        return {
            "shared_parameters": {"count": 1, "numel": self._numel, "names": [f"{self.module_name} (output)"]},
            "shared_modules": [self.module_name],
            "term_parameters": {t: len(indices) for t, indices in self.layout.reached.items()},
            "term_shared_parameters": {t: int(t in self._reaching) for t in self.layout.reached},
        }

    def arm(self, next_recorded: bool) -> None:
        self._outputs = []
        if next_recorded and self._handle is None:
            self._handle = self.module.register_forward_hook(self._keep)
        elif not next_recorded and self._handle is not None:
            self._handle.remove()
            self._handle = None

    def _keep(self, module: torch.nn.Module, inputs: tuple, output: object) -> None:
        if not isinstance(output, torch.Tensor) or output.requires_grad:
            self._outputs.append(output)

    def measure(self, terms: Mapping[str, torch.Tensor], weights: Mapping[str, float]) -> Measurement:
        """A capture filled in by the user's backward; a problem is an error on the first recorded step, and an
        unmeasured step later (a trunk frozen mid-training, a branch skipped), so training goes on."""
        outputs, self._outputs = self._outputs, []
        try:
            if len(outputs) != 1 or not isinstance(outputs[0], torch.Tensor) or outputs[0].grad_fn is None:
                raise SpecError(_output_problem(self.module_name, outputs))
            capture = Capture(terms, weights, outputs[0], self.module_name)
        except SpecError:
            if not self._measured_once:
                raise
            return Measured(None, [])
        if not self._measured_once:
            self._reaching = capture.reaching
            self._numel = outputs[0].numel()
            self._measured_once = True
        return capture

    def close(self) -> None:
        self.arm(False)


def _output_problem(name: str, outputs: list) -> str:
    if not outputs:
        return (f"Monitor(scope='representation'): module '{name}' produced no output that requires grad in this "
                f"step; pass at= a module that every term's computation goes through")
    if len(outputs) > 1:
        return (f"Monitor(scope='representation'): module '{name}' ran {len(outputs)} times in one step; pass at= a "
                f"module that runs once per step")
    if not isinstance(outputs[0], torch.Tensor):
        return (f"Monitor(scope='representation'): module '{name}' returns {type(outputs[0]).__name__}, not a "
                f"tensor; pass at= the submodule whose output is the shared tensor")
    return (f"Monitor(scope='representation'): the output of '{name}' is not computed from trainable parameters; "
            f"pass at= a module inside the trained part of the model")


def resolve_module(model: torch.nn.Module, at: torch.nn.Module | str | None) -> tuple[torch.nn.Module, str]:
    """The module at= names (a submodule or its dotted name) and its name in the model."""
    if at is None:
        raise SpecError("Monitor(scope='representation') needs at=: the module whose output every term uses")
    names = {id(module): name for name, module in model.named_modules()}
    if isinstance(at, torch.nn.Module):
        if id(at) not in names:
            raise SpecError(f"Monitor: at= {type(at).__name__} is not a submodule of the model")
        return at, names[id(at)] or "(root)"
    if isinstance(at, str):
        try:
            return model.get_submodule(at), at or "(root)"
        except AttributeError:
            raise SpecError(f"Monitor: the model has no submodule '{at}' (at=)") from None
    raise SpecError(f"Monitor: at= must be a module or a submodule's dotted name, got {type(at).__name__}")


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


def make_scope(name: str, model: torch.nn.Module, at: torch.nn.Module | str | None) -> Scope:
    """The scope a Monitor measures, by name; at= only for the representation scope."""
    if name not in SCOPES:
        raise SpecError(f"Monitor: scope must be one of {', '.join(repr(s) for s in SCOPES)}, got {name!r}")
    if name == REPRESENTATION:
        return RepresentationScope(model, at)
    if at is not None:
        raise SpecError(f"Monitor: at= is only used with scope='representation', not scope={name!r}")
    return LastLayerScope() if name == LAST_LAYER else Scope()
