"""Cost of a lossdiag recorded step against a plain training step and the peers' ways of getting
per-term gradients, measured interleaved in one process (each method trains its own copy).

Run: python benchmarks/bench_record.py [--steps 50] [--warmup 5]
Peers (optional): pip install --no-deps -c constraints.txt -r benchmarks/requirements-peers.txt
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.models import Problem, convnet_problem, mlp_problem  # noqa: E402
from benchmarks.peers import libmtl_step, naive_step, plain_step, torchjd_step  # noqa: E402
from lossdiag.record.gradients import apply_update, recorded_step, term_gradients, trainable_parameters  # noqa: E402

Step = Callable[[Problem, torch.optim.Optimizer, dict], object]


def lossdiag_step() -> Step:
    """A recorded step of `lossdiag profile`: K autograd.grad calls, statistics, update from the same gradients."""

    def step(problem: Problem, opt: torch.optim.Optimizer, batch: dict) -> dict:
        opt.zero_grad(set_to_none=True)
        terms = problem.losses(problem.model, batch)
        stats, _ = recorded_step(problem.model, terms, {name: 1.0 for name in terms})
        opt.step()
        return stats

    return step


def floor_step() -> Step:
    """The floor: one forward, one autograd.grad per term, the update from those gradients, no statistics."""

    def step(problem: Problem, opt: torch.optim.Optimizer, batch: dict) -> None:
        opt.zero_grad(set_to_none=True)
        terms = problem.losses(problem.model, batch)
        parameters = trainable_parameters(problem.model)[1]
        apply_update(term_gradients(terms, parameters), {name: 1.0 for name in terms}, parameters)
        opt.step()

    return step


def _available(step: Step, problem: Problem) -> bool:
    try:
        clone = copy.deepcopy(problem)
        step(clone, torch.optim.SGD(clone.model.parameters(), lr=1e-3), clone.make_batch(0))
        return True
    except ImportError as exc:
        print(f"  skipped: {exc}", file=sys.stderr)
        return False


def measure(problem: Problem, methods: dict[str, Step], steps: int, warmup: int) -> dict[str, float]:
    """Median seconds per step of each method, the methods taking turns on every step."""
    copies = {name: copy.deepcopy(problem) for name in methods}
    optimizers = {name: torch.optim.SGD(p.model.parameters(), lr=1e-3) for name, p in copies.items()}
    times: dict[str, list[float]] = {name: [] for name in methods}
    for index in range(warmup + steps):
        batch = problem.make_batch(index)
        for name, method in methods.items():
            start = time.perf_counter()
            method(copies[name], optimizers[name], batch)
            elapsed = time.perf_counter() - start
            if index >= warmup:
                times[name].append(elapsed)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args()
    candidates: dict[str, Step] = {
        "plain": plain_step,
        "floor: K autograd.grad + update": floor_step(),
        "lossdiag recorded step": lossdiag_step(),
        "naive: K backward(retain_graph) + training backward": naive_step,
        "torchjd 0.18 mtl_backward": torchjd_step,
        "torchjd 0.18 mtl_backward, parallel_chunk_size=1":
            lambda p, o, b: torchjd_step(p, o, b, parallel_chunk_size=1),
        "LibMTL 1.1.5 per-task gradients": libmtl_step,
    }
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"median of {args.steps} interleaved steps after {args.warmup} warm-up steps")
    for problem in (mlp_problem(), convnet_problem()):
        methods = {name: step for name, step in candidates.items() if _available(step, problem)}
        medians = measure(problem, methods, args.steps, args.warmup)
        print(f"\n{problem.name}: plain step {medians['plain'] * 1e3:.2f} ms")
        print("| method | time / plain step |\n| --- | --- |")
        for name, median in medians.items():
            print(f"| {name} | {median / medians['plain']:.2f} |")


if __name__ == "__main__":
    main()
