"""The proxy scopes a Monitor can measure instead of every shared parameter, labelled as such: the last shared
layer, or the gradient with respect to a shared representation; and the scope a Monitor's arguments name."""
from __future__ import annotations

from typing import Mapping, Optional

import torch

from lossdiag.errors import SpecError
from lossdiag.record.buffers import BufferGuard
from lossdiag.record.capture import Capture
from lossdiag.record.gradients import trainable_parameters
from lossdiag.record.scopes import LAST_LAYER, REPRESENTATION, SCOPES, Measured, Measurement, Scope
from lossdiag.record.shared import Layout, graph_nodes, module_of


class LastLayerScope(Scope):
    """The parameters of the last shared layer only (GradNorm's cheap variant): a proxy.

    A term that leaves the trunk before that layer (an intermediate output) reads zero there.
    """

    name = LAST_LAYER
    proxy = True

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__(model)
        self.module: Optional[str] = None

    def select(self, layout: Layout, terms: Mapping[str, torch.Tensor]) -> Layout:
        self.module = last_shared_module(terms, layout)
        keep = tuple(i for i in layout.shared if module_of(layout.names[i]) == self.module)
        reached = {t: tuple(i for i in indices if i in keep) for t, indices in layout.reached.items()}
        return Layout(layout.names, layout.parameters, reached, keep)

    def follow(self, layout: Layout) -> None:
        """Join a recorded step's layout, on the last shared layer only, into what the scope describes."""
        self.measured = self._joined(self.measured, layout)

    def candidates(self) -> tuple[tuple[str, ...], tuple[torch.nn.Parameter, ...]]:
        names, parameters = trainable_parameters(self.model)
        inside = [k for k, name in enumerate(names) if module_of(name) == self.module]
        return tuple(names[k] for k in inside), tuple(parameters[k] for k in inside)

    def note(self) -> Optional[str]:
        return (f"gradients on the last shared layer '{self.module or '(none)'}' only, not on every shared "
                f"parameter; a term that leaves the shared layers before it reads zero there")


def last_shared_module(terms: Mapping[str, torch.Tensor], layout: Layout) -> Optional[str]:
    """The shared module used last in the forward pass by two or more terms together: its parameter feeds the
    most recently created graph node that several terms reach. A parameter used again by one term alone (a tied
    embedding reused as the output projection) does not count as used there."""
    shared = {id(layout.parameters[i]): i for i in layout.shared}
    reached_by: dict = {}
    for k, term in enumerate(terms.values()):
        for node in graph_nodes(term):
            reached_by.setdefault(node, set()).add(k)
    latest: dict[int, int] = {}
    for node, owners in reached_by.items():
        if len(owners) < 2:
            continue
        for child, _ in node.next_functions:
            index = shared.get(id(getattr(child, "variable", None))) if child is not None else None
            if index is not None:
                latest[index] = max(latest.get(index, -1), node._sequence_nr())
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
        super().__init__(model)
        self.module, self.module_name = resolve_module(model, at)
        self._outputs: list = []
        self._handle: Optional[torch.utils.hooks.RemovableHandle] = None
        self._numel = 0
        self._measured_once = False
        self.arm(True)

    def bind(self, layout: Layout, terms: Mapping[str, torch.Tensor]) -> None:
        self.layout = self.measured = layout

    def note(self) -> Optional[str]:
        return (f"gradients with respect to the output of '{self.module_name}', not its parameters; shares and "
                f"cosines there can differ from the exact ones, even in sign; a term that leaves the model before "
                f"that output reads zero there")

    def describe(self) -> dict:
        return {
            "shared_parameters": {"count": 1, "numel": self._numel, "names": [f"{self.module_name} (output)"]},
            "shared_modules": [self.module_name],
            "term_parameters": {t: len(indices) for t, indices in self.layout.reached.items()},
            "term_shared_parameters": self.layout.describe()["term_shared_parameters"],
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
            guard = BufferGuard(self.model) if any(weights[t] == 0 for t in terms) else None
            capture = Capture(terms, weights, outputs[0], self.module_name)
            if guard is not None:
                guard.settle()
        except SpecError:
            if not self._measured_once:
                raise
            return Measured(None, [])
        if not self._measured_once:
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


def make_scope(name: str, model: torch.nn.Module, at: torch.nn.Module | str | None) -> Scope:
    """The scope a Monitor measures, by name; at= only for the representation scope."""
    if name not in SCOPES:
        raise SpecError(f"Monitor: scope must be one of {', '.join(repr(s) for s in SCOPES)}, got {name!r}")
    if name == REPRESENTATION:
        return RepresentationScope(model, at)
    if at is not None:
        raise SpecError(f"Monitor: at= is only used with scope='representation', not scope={name!r}")
    return LastLayerScope(model) if name == LAST_LAYER else Scope(model)
