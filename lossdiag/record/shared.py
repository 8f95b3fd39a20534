"""Find the parameters each loss term reaches by walking its autograd graph, with no backward pass."""
from __future__ import annotations

import dataclasses
from typing import Iterator, Mapping, Optional, Sequence

import torch

from lossdiag.record.schema import LAYOUT


def graph_nodes(*terms: torch.Tensor) -> Iterator[torch.autograd.graph.Node]:
    """Every node of the terms' autograd graphs, once each."""
    seen: set[torch.autograd.graph.Node] = set()
    stack = [term.grad_fn for term in terms if term.grad_fn is not None]
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        yield node
        stack.extend(child for child, _ in node.next_functions if child is not None)


def reached_parameter_ids(term: torch.Tensor, trainable_ids: set[int]) -> set[int]:
    """Ids of the trainable parameters whose AccumulateGrad nodes lie in the term's graph."""
    if term.grad_fn is None:
        return {id(term)} & trainable_ids
    reached: set[int] = set()
    for node in graph_nodes(term):
        variable = getattr(node, "variable", None)
        if variable is not None and id(variable) in trainable_ids:
            reached.add(id(variable))
    return reached


COMPILED = "CompiledFunctionBackward"
CHECKPOINT = "CheckpointFunctionBackward"
COMPILED_WRAPPER = "_orig_mod"
"""The attribute torch.compile's OptimizedModule keeps the compiled module under; not a module of the user's."""

UNMEASURABLE = {
    CHECKPOINT: (
        "the model uses torch.utils.checkpoint with use_reentrant=True (torch's old default), which cannot give "
        "per-term gradients (torch.autograd.grad); pass use_reentrant=False to checkpoint()"),
}


def measurability_problem(terms: Mapping[str, torch.Tensor], layout: Layout) -> Optional[str]:
    """Why per-term gradients cannot be taken on these graphs, or None when they can: a reentrant-checkpointed
    region, or a torch.compile'd region that holds parameters and that two or more terms pass through.

    A compiled region's backward runs as one block, giving every input a gradient whether a term reached it or
    not; where the region holds no parameter (a compiled function on activations, such as torchvision's
    roi_align fallback) or only one term passes through it, each term's gradients are still its own, so it is
    measured.
    """
    passing: dict[torch.autograd.graph.Node, list[str]] = {}
    for term, value in terms.items():
        for node in graph_nodes(value):
            kind = type(node).__name__
            if kind in UNMEASURABLE:
                return UNMEASURABLE[kind]
            if kind == COMPILED:
                passing.setdefault(node, []).append(term)
    names = {id(p): name for name, p in zip(layout.names, layout.parameters)}
    for node, through in passing.items():
        held = [names[id(v)] for v in _input_leaves(node) if id(v) in names]
        if held and len(through) >= 2:
            return _compiled_problem(through, held)
    return None


def _input_leaves(node: torch.autograd.graph.Node) -> Iterator[torch.Tensor]:
    """The leaf tensors a node takes directly as inputs (the parameters a compiled region holds)."""
    for child, _ in node.next_functions:
        variable = getattr(child, "variable", None)
        if variable is not None:
            yield variable


def _compiled_problem(terms: list[str], held: list[str]) -> str:
    """The refusal of a compiled region that several terms pass through, naming the module that holds it."""
    holder = _compiled_holder(held)
    where = "the model" if holder is None else f"{holder!r}"
    listed = ", ".join(repr(term) for term in terms)
    return (f"the terms {listed} all pass through a torch.compile'd region holding {len(held)} parameters of "
            f"{where}, whose backward runs as one block that gives every parameter inside a gradient from each "
            f"term, so every one would look shared; measure {where} without torch.compile (the balance between "
            f"the terms is the same), then compile it for training")


def _compiled_holder(parameter_names: list[str]) -> Optional[str]:
    """The module holding all these parameters, as the user's model names it: the module torch.compile wrapped
    where they sit under one, else the innermost module holding them all; None when that is the whole model."""
    paths = [module_of(name).split(".") for name in parameter_names]
    common: list[str] = []
    for parts in zip(*paths):
        if len(set(parts)) > 1:
            break
        common.append(parts[0])
    if COMPILED_WRAPPER in common:
        common = common[:len(common) - common[::-1].index(COMPILED_WRAPPER) - 1]
    named = [part for part in common if part not in (COMPILED_WRAPPER, "(root)")]
    return ".".join(named) or None


def module_of(parameter_name: str) -> str:
    """The module a parameter belongs to, from its dotted name ('(root)' for top-level ones)."""
    return parameter_name.rpartition(".")[0] or "(root)"


@dataclasses.dataclass(frozen=True)
class Layout:
    """Which trainable parameters each term reaches, and which of them two or more terms share."""

    names: tuple[str, ...]
    parameters: tuple[torch.nn.Parameter, ...]
    reached: Mapping[str, tuple[int, ...]]
    shared: tuple[int, ...]

    @property
    def shared_names(self) -> list[str]:
        return [self.names[i] for i in self.shared]

    @property
    def shared_numel(self) -> int:
        return sum(self.parameters[i].numel() for i in self.shared)

    @property
    def shared_modules(self) -> list[str]:
        return list(dict.fromkeys(module_of(self.names[i]) for i in self.shared))

    @property
    def term_shared_counts(self) -> dict[str, int]:
        """How many of the shared parameters each term reaches."""
        shared = set(self.shared)
        return {term: sum(1 for i in indices if i in shared) for term, indices in self.reached.items()}

    def union(self, other: "Layout", order: Sequence[str]) -> "Layout":
        """The parameters either layout reaches, by name and in `order` (the model's parameter names): each term's
        reach joined, shared where either shares. This layout itself when the other adds nothing to it."""
        mine, theirs = self._reached_names(), other._reached_names()
        reached = {term: mine.get(term, set()) | theirs.get(term, set()) for term in {**mine, **theirs}}
        shared = set(self.shared_names) | set(other.shared_names)
        if reached == mine and shared == set(self.shared_names):
            return self
        parameters = {**dict(zip(self.names, self.parameters)), **dict(zip(other.names, other.parameters))}
        position = {name: k for k, name in enumerate(order)}
        names = tuple(sorted(parameters, key=lambda name: position.get(name, len(position))))
        index = {name: i for i, name in enumerate(names)}
        return Layout(names, tuple(parameters[name] for name in names),
                      {term: tuple(sorted(index[name] for name in found)) for term, found in reached.items()},
                      tuple(sorted(index[name] for name in shared)))

    def _reached_names(self) -> dict[str, set[str]]:
        return {term: {self.names[i] for i in indices} for term, indices in self.reached.items()}

    def describe(self) -> dict:
        """Plain data for the records' header and summary.json."""
        return {
            "shared_parameters": {"count": len(self.shared), "numel": self.shared_numel,
                                  "names": self.shared_names},
            "shared_modules": self.shared_modules,
            "term_parameters": {term: len(indices) for term, indices in self.reached.items()},
            "term_shared_parameters": self.term_shared_counts,
        }


def discover(model: torch.nn.Module, terms: Mapping[str, torch.Tensor]) -> Layout:
    """Map each term to the trainable parameters its graph reaches; shared ones are reached by two or more."""
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    index_of = {id(p): i for i, (_, p) in enumerate(named)}
    reached = {}
    counts = [0] * len(named)
    for term, value in terms.items():
        indices = tuple(sorted(index_of[pid] for pid in reached_parameter_ids(value, set(index_of))))
        reached[term] = indices
        for i in indices:
            counts[i] += 1
    shared = tuple(i for i, count in enumerate(counts) if count >= 2)
    return Layout(tuple(n for n, _ in named), tuple(p for _, p in named), reached, shared)


def layout_record(step: int, description: dict) -> dict:
    """The record written when a recorded step reaches a parameter the header (or an earlier such record) did not
    describe: a reader takes the last one's description in place of the header's."""
    return {"kind": LAYOUT, "step": step, **description}
