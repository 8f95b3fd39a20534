"""Averaging across ranks under torchrun: the only lossdiag module that talks to torch.distributed.

A Monitor under DistributedDataParallel measures the gradient of the global batch. DDP's reducer does not fire on
`torch.autograd.grad`, so each rank's per-term gradients are local; averaging per-rank norms would be biased by
gradient noise. On a recorded step the ranks' per-term gradients are averaged first, in one all_reduce over one
flat buffer, and only then turned into norms and the Gram matrix. The loss values of the steps since the previous
recorded step travel in the same collective. Every collective happens at a step fixed by the step count (a
recorded step, or close()), never at the time-based host flushes, which fall at different steps on each rank.
"""
from __future__ import annotations

import sys
from typing import Mapping, Optional, Sequence

import torch
import torch.distributed as dist

from lossdiag.errors import SpecError
from lossdiag.record.gradients import TermGrads, reach
from lossdiag.record.scopes import REPRESENTATION, Measurement, Scope
from lossdiag.record.shared import Layout, discover, graph_nodes


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module a DistributedDataParallel wraps, so parameter names read the same wrapped or not."""
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def sharded(model: torch.nn.Module) -> bool:
    """Whether FSDP2 (`fully_shard`) manages any part of the model."""
    fsdp = sys.modules.get("torch.distributed.fsdp")
    kind = getattr(fsdp, "FSDPModule", None)
    return kind is not None and any(isinstance(module, kind) for module in model.modules())


def ranks(model: torch.nn.Module, scope: Scope) -> Optional["Ranks"]:
    """The ranks a Monitor averages over, or None when it runs in a single process (the unchanged path).

    Under FSDP2 only the representation scope can be measured: sharded parameters never enter autograd.
    """
    if not dist.is_available() or not dist.is_initialized() or dist.get_world_size() < 2:
        return None
    if sharded(model) and scope.name != REPRESENTATION:
        raise SpecError(f"Monitor(scope={scope.name!r}) cannot take per-term gradients of parameters sharded by "
                        f"FSDP2 (fully_shard); use scope='representation', at= the module whose output every term "
                        f"uses (exact in activation space), or DistributedDataParallel for every scope")
    return Ranks(summing=scope.name == REPRESENTATION)


class Ranks:
    """The default process group seen from one rank: rank 0 writes; every rank takes part in each average.

    Tensors to average wait as riders until the next collective, which averages them in place.
    """

    def __init__(self, summing: bool) -> None:
        self._summing = summing
        self.rank = dist.get_rank()
        self.size = dist.get_world_size()
        self._riders: list[torch.Tensor] = []
        self._waiting: list[_SummedCapture] = []
        self._reducing: list[_SummedCapture] = []

    @property
    def writes(self) -> bool:
        """Whether this rank writes the records and the report (rank 0 only)."""
        return self.rank == 0

    def discover(self, model: torch.nn.Module, terms: Mapping[str, torch.Tensor]) -> Layout:
        """The parameters each term reaches, joined over the ranks so that every rank averages the same gradients.

        Seen through DDP's output sink, and through FSDP2's swap of a sharded parameter for the unsharded one that
        autograd sees.
        """
        layout = discover(model, terms)
        if self._summing and any(type(node).__name__ == SINK for node in graph_nodes(*terms.values())):
            raise SpecError("Monitor(scope='representation') cannot tell the terms apart behind "
                            "DistributedDataParallel(find_unused_parameters=True), which joins the model's outputs "
                            "in one node; use scope='all' (exact) or find_unused_parameters=False")
        twins = _unsharded_twins(model)
        rows = []
        for value in terms.values():
            leaves = _reached(value)
            rows.append([id(p) in leaves or twins.get(id(p)) in leaves for p in layout.parameters])
        device = next(iter(terms.values())).device  # NCCL reduces only tensors on the GPU
        reach = torch.tensor(rows, dtype=torch.int32).reshape(len(rows), len(layout.parameters)).to(device)
        dist.all_reduce(reach, op=dist.ReduceOp.MAX)
        reached = {term: tuple(reach[k].nonzero().flatten().tolist()) for k, term in enumerate(layout.reached)}
        shared = tuple((reach.sum(0) >= 2).nonzero().flatten().tolist())
        return Layout(layout.names, layout.parameters, reached, shared)

    def ride(self, values: torch.Tensor) -> None:
        """Average `values` in place at the next collective (the loss values of the steps not yet averaged);
        the representation captures of earlier recorded steps join it too."""
        self._riders.append(values)
        self._riders.extend(capture.board() for capture in self._waiting)
        self._reducing.extend(self._waiting)
        self._waiting = []

    def average_grads(self, grads: TermGrads, names: Sequence[str], parameters: Sequence[torch.nn.Parameter]
                      ) -> tuple[TermGrads, Layout]:
        """Every term's gradient on every candidate parameter, averaged over the ranks in one collective (zeros
        where a rank's term did not reach a parameter), with which parameters each term reached on any rank: the
        step's layout, so that a parameter first reached on a later step (routing to a new expert) is measured."""
        keys = [(term, i) for term in grads for i in range(len(parameters))]
        reached = torch.tensor([[float(i in grads[term]) for i in range(len(parameters))] for term in grads])
        tensors = [grads[term][i] if i in grads[term] else _zeros(parameters[i]) for term, i in keys]
        *averaged, anywhere = self._all_reduce([*tensors, reached.reshape(len(grads), len(parameters))])
        anywhere = anywhere.real if anywhere.is_complex() else anywhere
        result: TermGrads = {term: {} for term in grads}
        for (term, i), value, flag in zip(keys, averaged, anywhere.reshape(-1).tolist()):
            if flag > 0:
                result[term][i] = value
        return result, reach(result, names, parameters)

    def defer(self, measurement: Measurement, terms: int, device: torch.device) -> Measurement:
        """A representation capture, whose partial Gram matrix is summed over the ranks at the next collective;
        the parameter scopes' measurements, already averaged, as they are. Every representation step rides, even
        one this rank could not measure, so that the collective has the same size on every rank."""
        if not self._summing:
            return measurement
        summed = _SummedCapture(measurement, terms, device, self.size)
        self._waiting.append(summed)
        return summed

    def sync(self) -> None:
        """Run the collective now if anything rides (every rank calls this at the same step)."""
        if self._riders:
            self._all_reduce([])

    def _all_reduce(self, tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """One all_reduce of `tensors` and the riders, copied into one buffer; the tensors' averages are
        returned as views of it, the riders are overwritten with theirs."""
        riders, self._riders = self._riders, []
        dtype = _buffer_dtype(tensors)
        device = tensors[0].device if tensors else riders[0].device
        parts = [*tensors, *riders]
        flat = torch.empty(sum(part.numel() for part in parts), dtype=dtype, device=device)
        pieces = flat.split([part.numel() for part in parts])
        for part, piece in zip(parts, pieces):
            piece.view(part.shape).copy_(part)
        dist.all_reduce(flat)
        flat.div_(self.size)
        for rider, piece in zip(riders, pieces[len(tensors):]):
            rider.copy_(piece.view(rider.shape))
        for capture in self._reducing:
            capture.landed()
        self._reducing = []
        return [piece.view(t.shape) for t, piece in zip(tensors, pieces)]


SINK = "_DDPSinkBackward"


def _reached(term: torch.Tensor) -> set[int]:
    """Ids of the leaves whose gradient the term reaches. DDP with find_unused_parameters=True passes all the
    model's outputs through one node (`_DDPSink`, an identity): through it, only the output the term uses counts."""
    if term.grad_fn is None:
        return {id(term)}
    reached: set[int] = set()
    seen: set = set()
    stack = [(term.grad_fn, term.output_nr)]
    while stack:
        node, output = stack.pop()
        sink = type(node).__name__ == SINK
        key = (node, output) if sink else node
        if key in seen:
            continue
        seen.add(key)
        variable = getattr(node, "variable", None)
        if variable is not None:
            reached.add(id(variable))
        edges = (node.next_functions[output],) if sink else node.next_functions
        stack.extend((child, number) for child, number in edges if child is not None)
    return reached


def _unsharded_twins(model: torch.nn.Module) -> dict[int, int]:
    """For each parameter FSDP2 shards, the id of the unsharded parameter its forward puts in the graph.

    Read from FSDP2's internal parameter groups (as of torch 2.13), each lookup guarded: should they change, the
    sharded parameters count as unreached (a false no-grad-path finding), while the scope's numbers stay exact.
    """
    twins: dict[int, int] = {}
    for module in model.modules():
        state = module._get_fsdp_state() if hasattr(module, "_get_fsdp_state") else None
        group = getattr(state, "_fsdp_param_group", None)
        for param in getattr(group, "fsdp_params", ()):
            unsharded = getattr(param, "_unsharded_param", None)
            if unsharded is not None:
                twins[id(param.sharded_param)] = id(unsharded)
    return twins


def _zeros(parameter: torch.nn.Parameter) -> torch.Tensor:
    """A zero gradient for the parameter, as an expanded view of one element (copied into the buffer as zeros)."""
    return parameter.new_zeros(()).expand(parameter.shape)


def _buffer_dtype(tensors: Sequence[torch.Tensor]) -> torch.dtype:
    """The gradients' widest dtype, at least float32 (a sum of half-precision gradients loses too much)."""
    dtype = torch.float32 if tensors else torch.float64
    for tensor in tensors:
        dtype = torch.promote_types(dtype, tensor.dtype)
    return dtype


class _SummedCapture:
    """A representation capture under DDP: samples are split across ranks, so the global K x K Gram matrix of the
    activation gradients is the sum of the ranks' partial ones (each term's global gradient is 1/size of the local
    one on each rank's slice). Its numbers are ready once that sum has been taken at a collective."""

    def __init__(self, capture: Measurement, terms: int, device: torch.device, size: int) -> None:
        self._capture = capture
        self._terms = terms
        self._device = device
        self._size = size
        self._values: Optional[torch.Tensor] = None
        self._ready = False

    def settle(self, force: bool) -> bool:
        self._capture.settle(force)
        return self._ready

    def board(self) -> torch.Tensor:
        """The partial Gram matrix, flat, then 1 if this rank's capture is complete (else zeros and 0)."""
        self._capture.settle(True)
        gram = self._capture.device_values()
        if gram is None:
            self._values = torch.zeros(self._terms * self._terms + 1, dtype=torch.float64, device=self._device)
        else:
            self._values = torch.cat([gram, gram.new_ones(1)])
        return self._values

    def landed(self) -> None:
        """The collective averaged the partials: the global Gram matrix is their sum over size squared."""
        self._values[:-1] /= self._size
        self._ready = True

    def device_values(self) -> Optional[torch.Tensor]:
        return self._values

    def result(self, host: list[float]) -> tuple[Optional[dict], list[str]]:
        """Measured only where every rank's capture was complete (the averaged flag is then exactly 1)."""
        if host[-1] != 1.0:
            return None, []
        return self._capture.result(host[:-1])
