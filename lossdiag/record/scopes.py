"""What a Monitor measures on a recorded step: every shared parameter (exact, the default), the last shared
layer, or the gradient with respect to a shared representation (both proxies, labelled as such)."""
from __future__ import annotations

import math
from typing import Callable, Mapping, Optional, Protocol, Sequence

import torch

from lossdiag.errors import SpecError
from lossdiag.record.buffers import BufferGuard
from lossdiag.record.capture import Capture
from lossdiag.record.gradients import TermGrads, reach, shared_statistics, term_gradients, trainable_parameters
from lossdiag.record.shared import Layout, graph_nodes, measurability_problem, module_of

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
    """Every trainable parameter two or more terms reach: exact, K extra backward passes on a recorded step.

    `average`, set by a Monitor under DDP, averages the terms' gradients across ranks before the statistics and
    gives the step's layout joined over the ranks.
    """

    name = ALL
    proxy = False

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.layout: Optional[Layout] = None
        self.measured: Optional[Layout] = None
        self.average: Optional[Callable[[TermGrads, Sequence[str], Sequence[torch.nn.Parameter]],
                                        tuple[TermGrads, Layout]]] = None
        self._grown = False

    def bind(self, layout: Layout, terms: Mapping[str, torch.Tensor]) -> None:
        """Describe what is measured from the layout of the first call's graphs; refuse graphs whose per-term
        gradients cannot be taken without changing training."""
        problem = measurability_problem(terms, layout)
        if problem is not None:
            raise SpecError(f"Monitor(scope={self.name!r}): {problem}")
        self.layout = layout
        self.measured = self.select(layout, terms)

    def follow(self, layout: Layout) -> None:
        """Join a recorded step's layout into what the scope describes: every parameter shared on some step."""
        self.layout = self.measured = self._joined(self.measured, layout)

    def _joined(self, described: Layout, layout: Layout) -> Layout:
        joined = described.union(layout, [name for name, _ in self.model.named_parameters()])
        self._grown = self._grown or joined is not described
        return joined

    def grown(self) -> Optional[dict]:
        """The scope's description when a recorded step since the last call reached what it did not describe."""
        grown, self._grown = self._grown, False
        return self.describe() if grown else None

    def select(self, layout: Layout, terms: Mapping[str, torch.Tensor]) -> Layout:
        """The parameters this scope measures: every shared one."""
        return layout

    def candidates(self) -> tuple[tuple[str, ...], tuple[torch.nn.Parameter, ...]]:
        """The parameters whose gradients a recorded step takes: every one that trains now."""
        return trainable_parameters(self.model)

    def note(self) -> Optional[str]:
        """For a proxy, what it measures and how it can mislead; None for the exact scope."""
        return None

    def describe(self) -> dict:
        """The header's description of what was measured (shared parameters, modules, per-term counts)."""
        description = self.measured.describe()
        whole = self.layout.describe()
        description["term_parameters"] = whole["term_parameters"]
        description["term_shared_parameters"] = whole["term_shared_parameters"]
        return description

    def measure(self, terms: Mapping[str, torch.Tensor], weights: Mapping[str, float]) -> Measurement:
        """Each term's gradient on the parameters it reaches in this step's graph, keeping the graph for the
        user's backward and the buffers as that backward expects them. Under DDP, every rank averages every
        term's gradient on every candidate parameter (the same on all ranks), so the collective matches on all
        and a parameter first reached on any rank at a later step is measured."""
        names, parameters = self.candidates()
        grads = term_gradients(terms, parameters, keep_graph=True, guard=BufferGuard(self.model))
        if self.average is None:
            layout = reach(grads, names, parameters)
        else:
            grads, layout = self.average(grads, names, parameters)
        self.follow(layout)
        stats = shared_statistics(grads, layout)
        unmeasured = [t for t in terms if not grads[t]]
        if self.proxy:
            stats["norms_all"].update({term: math.nan for term in unmeasured})
        bad = [t for t in terms if t not in unmeasured and not math.isfinite(stats["norms_all"][t])]
        return Measured(stats, bad)

    def arm(self, next_recorded: bool) -> None:
        """Prepare for the next step (only the representation scope needs to)."""

    def close(self) -> None:
        """Remove every hook this scope registered."""


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
