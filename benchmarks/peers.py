"""One training step on a Problem, done the way each peer gets per-term gradients, for timing.

Every step zeroes the gradients, runs one forward pass, leaves the plain update (the gradient of the
sum of the terms) in `.grad` and calls `opt.step()`. The per-term gradients are those on
`problem.shared_parameters()`, flattened, so the exact methods can be checked against each other.
"""

import importlib.util
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from benchmarks.models import Batch, Problem

INSTALL_HINT = "pip install --no-deps -c constraints.txt -r benchmarks/requirements-peers.txt"


@dataclass
class StepInfo:
    """Loss values of the step and (except plain) each term's flat shared-parameter gradient."""

    losses: dict[str, float]
    grads: dict[str, Tensor] = field(default_factory=dict)


def _flat_grad(params: list[nn.Parameter]) -> Tensor:
    return torch.cat([p.new_zeros(p.numel()) if p.grad is None else p.grad.ravel() for p in params])


def _values(losses: dict[str, Tensor]) -> dict[str, float]:
    return {name: loss.item() for name, loss in losses.items()}


def plain_step(problem: Problem, opt: torch.optim.Optimizer, batch: Batch) -> StepInfo:
    """The reference: backward of the sum of the terms, then the optimizer step."""
    opt.zero_grad()
    losses = problem.losses(problem.model, batch)
    torch.stack(list(losses.values())).sum().backward()
    opt.step()
    return StepInfo(_values(losses))


def naive_step(problem: Problem, opt: torch.optim.Optimizer, batch: Batch) -> StepInfo:
    """K x `backward(retain_graph=True)` copying the shared `.grad`, then the training backward."""
    shared = problem.shared_parameters()
    opt.zero_grad()
    losses = problem.losses(problem.model, batch)
    grads = {}
    for name, loss in losses.items():
        loss.backward(retain_graph=True)
        grads[name] = _flat_grad(shared)
        opt.zero_grad()
    torch.stack(list(losses.values())).sum().backward()
    opt.step()
    return StepInfo(_values(losses), grads)


def torchjd_step(
    problem: Problem,
    opt: torch.optim.Optimizer,
    batch: Batch,
    parallel_chunk_size: int | None = None,
) -> StepInfo:
    """torchjd 0.18: `mtl_backward(losses, features=<representation output>)` fills `.jac` (one row
    per term) on the shared parameters and `.grad` on the heads; `jac_to_grad(shared, Sum())` sums
    the rows into `.grad`, which is the plain update. `parallel_chunk_size` is torchjd's (None: one
    vmapped call over the K rows; 1: K sequential backwards, faster for convolutions on CPU)."""
    try:
        from torchjd.aggregation import Sum
        from torchjd.autojac import jac_to_grad, mtl_backward
    except ImportError as e:
        raise ImportError(f"torchjd_step needs torchjd==0.18.0: {INSTALL_HINT}") from e
    shared = problem.shared_parameters()
    features: list[Tensor] = []
    hook = problem.model.get_submodule(problem.representation).register_forward_hook(
        lambda _m, _i, out: features.append(out)
    )
    opt.zero_grad()
    try:
        losses = problem.losses(problem.model, batch)
    finally:
        hook.remove()
    mtl_backward(
        list(losses.values()),
        features=features[0],
        shared_params=shared,
        parallel_chunk_size=parallel_chunk_size,
    )
    rows = [p.jac.reshape(len(losses), -1) for p in shared]  # type: ignore[attr-defined]
    jacobian = torch.cat(rows, dim=1)
    jac_to_grad(shared, Sum())
    opt.step()
    return StepInfo(_values(losses), dict(zip(losses, jacobian, strict=True)))


@cache
def _libmtl_weighting_class() -> type:
    """LibMTL's `AbsWeighting`, loaded by file path: `import LibMTL` needs torchvision, this file
    only torch and numpy."""
    spec = importlib.util.find_spec("LibMTL")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"libmtl_step needs LibMTL==1.1.5: {INSTALL_HINT}")
    path = Path(spec.submodule_search_locations[0]) / "weighting" / "abstract_weighting.py"
    file_spec = importlib.util.spec_from_file_location("_libmtl_abstract_weighting", path)
    assert file_spec is not None and file_spec.loader is not None
    module = importlib.util.module_from_spec(file_spec)
    file_spec.loader.exec_module(module)

    class SharedParamsWeighting(module.AbsWeighting):  # type: ignore[name-defined,misc]
        """What LibMTL's architecture mixes into a weighting, for the given shared parameters."""

        def __init__(self, shared: list[nn.Parameter], task_num: int) -> None:
            super().__init__()
            self.shared = shared
            self.task_num = task_num
            self.device = shared[0].device
            self.rep_grad = False

        def get_share_params(self) -> Any:
            return iter(self.shared)

        def zero_grad_share_params(self) -> None:
            # LibMTL calls encoder.zero_grad(), written when that zeroed in place (torch < 2.0);
            # its _reset_grad needs .grad to exist, so zero in place here.
            for p in self.shared:
                if p.grad is not None:
                    p.grad.zero_()

    return SharedParamsWeighting


def libmtl_step(problem: Problem, opt: torch.optim.Optimizer, batch: Batch) -> StepInfo:
    """LibMTL 1.1.5, as its gradient weightings (MGDA, IMTL, GradNorm) run it with rep_grad=False:
    `AbsWeighting._get_grads(losses, mode='backward')` (K backwards, shared `.grad` copied into a
    K x P matrix), then `_backward_new_grads(ones(K), grads=...)`: equal weights, plain update."""
    opt.zero_grad()
    losses = problem.losses(problem.model, batch)
    weighting = _libmtl_weighting_class()(problem.shared_parameters(), len(losses))
    grads = weighting._get_grads(list(losses.values()), mode="backward")
    weighting._backward_new_grads(torch.ones(len(losses)), grads=grads)
    opt.step()
    return StepInfo(_values(losses), dict(zip(losses, grads, strict=True)))
