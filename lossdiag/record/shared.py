"""Find the parameters each loss term reaches by walking its autograd graph, with no backward pass."""
from __future__ import annotations

import dataclasses
from typing import Iterator, Mapping, Optional

import torch


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


UNMEASURABLE = {
    "CompiledFunctionBackward": (
        "the terms come out of a torch.compile'd graph, whose backward runs as one block that cannot be repeated per "
        "term without changing training (AOTAutograd donates its buffers; dropout inside would draw again) and "
        "would make every parameter inside it look shared; measure the model without torch.compile (the balance "
        "between the terms is the same), then compile it for training"),
    "CheckpointFunctionBackward": (
        "the model uses torch.utils.checkpoint with use_reentrant=True (torch's old default), which cannot give "
        "per-term gradients (torch.autograd.grad); pass use_reentrant=False to checkpoint()"),
}


def measurability_problem(terms: Mapping[str, torch.Tensor]) -> Optional[str]:
    """Why per-term gradients cannot be taken on these graphs (a compiled or reentrant-checkpointed region),
    or None when they can."""
    for term in terms.values():
        for node in graph_nodes(term):
            problem = UNMEASURABLE.get(type(node).__name__)
            if problem is not None:
                return problem
    return None


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

    def describe(self) -> dict:
        """Plain data for the records' header and summary.json."""
        return {
            "shared_parameters": {"count": len(self.shared), "numel": self.shared_numel,
                                  "names": self.shared_names},
            "shared_modules": self.shared_modules,
            "term_parameters": {term: len(indices) for term, indices in self.reached.items()},
            "term_shared_parameters": {term: sum(1 for i in indices if i in set(self.shared))
                                       for term, indices in self.reached.items()},
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
