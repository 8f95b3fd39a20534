"""What a Monitor measures on a recorded step: every shared parameter (exact, the default), the last shared
layer, or the gradient with respect to a shared representation (both proxies, labelled as such)."""
from __future__ import annotations

import math
from typing import Callable, Mapping, Optional, Protocol, Sequence

import torch

from lossdiag.errors import SpecError
from lossdiag.record.buffers import BufferGuard
from lossdiag.record.gradients import TermGrads, reach, shared_statistics, term_gradients, trainable_parameters
from lossdiag.record.shared import Layout, measurability_problem

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
