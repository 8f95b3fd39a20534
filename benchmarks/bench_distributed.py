"""Cost of lossdiag.Monitor under DistributedDataParallel, 2 ranks on the CPU (gloo, one thread each).

Each rank trains two DDP copies of the problem on its own batches, taking turns on every step in a rotating order
(so contention hits both alike): the plain DDP loop and the same loop with its sum taken by `monitor.combine`.
- recorded step: the monitor at every=1, so each of its steps averages the per-term gradients over the ranks; the
  median step time against the median plain DDP step, and the bytes each sends in its collectives (DDP all-reduces
  every gradient once a step; the monitor's one all_reduce is counted by wrapping torch.distributed.all_reduce,
  which DDP's reducer does not call);
- whole loop: the monitor at the default schedule, the summed step times over --loop-steps against the plain loop.

Run: python benchmarks/bench_distributed.py [--steps 40] [--loop-steps 1000] [--problems mlp,convnet]
"""
from __future__ import annotations

import argparse
import copy
import datetime
import json
import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.models import Problem, convnet_problem, mlp_problem  # noqa: E402
from lossdiag import Monitor  # noqa: E402
from lossdiag.record.schedule import DEFAULT_EVERY, Schedule  # noqa: E402

WORLD = 2
PROBLEMS = {"mlp": mlp_problem, "convnet": convnet_problem}
SENT: list[int] = []


def counting_all_reduce(original: Callable) -> Callable:
    """torch.distributed.all_reduce, recording the bytes of each tensor it reduces."""

    def all_reduce(tensor: torch.Tensor, *args, **kwargs):
        SENT.append(tensor.numel() * tensor.element_size())
        return original(tensor, *args, **kwargs)

    return all_reduce


def ddp_step(problem: Problem, wrapped: DDP, optimizer: torch.optim.Optimizer, batch: dict,
             monitor: Optional[Monitor]) -> None:
    terms = problem.losses(wrapped, batch)
    loss = monitor.combine(terms) if monitor is not None else sum(terms.values())
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def interleave(problem: Problem, rank: int, steps: int, every: int, out: Path) -> dict[str, list[float]]:
    """Seconds per step of the plain and the monitored DDP loop, taking turns; bytes the monitor sent."""
    copies = {name: copy.deepcopy(problem.model) for name in ("plain", "monitored")}
    monitor = Monitor(copies["monitored"], out=out, every=every)
    wrapped = {name: DDP(model) for name, model in copies.items()}
    optimizers = {name: torch.optim.SGD(model.parameters(), lr=1e-3) for name, model in copies.items()}
    times: dict[str, list[float]] = {name: [] for name in copies}
    names = list(copies)
    SENT.clear()
    for step in range(steps):
        batch = problem.make_batch(step * WORLD + rank)
        for name in names[step % 2:] + names[:step % 2]:
            start = time.perf_counter()
            ddp_step(problem, wrapped[name], optimizers[name], batch, monitor if name == "monitored" else None)
            times[name].append(time.perf_counter() - start)
    sent = list(SENT)
    monitor.close()
    return {**times, "sent": sent}


def rank_main(rank: int, folder: str, args: argparse.Namespace) -> None:
    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=WORLD,
                            timeout=datetime.timedelta(seconds=600))
    torch.set_num_threads(1)
    dist.all_reduce = counting_all_reduce(dist.all_reduce)
    results = {}
    for name in args.problems.split(","):
        problem = PROBLEMS[name]()
        ddp_bytes = sum(p.numel() * p.element_size() for p in problem.model.parameters() if p.requires_grad)
        every_step = interleave(problem, rank, args.warmup + args.steps, 1, Path(folder) / f"{name}-every1")
        loop = interleave(problem, rank, args.loop_steps, DEFAULT_EVERY, Path(folder) / f"{name}-loop")
        recorded = every_step["sent"][1:]  # the first is the layout's agreement at the first call
        results[name] = {
            "plain_step_ms": 1e3 * statistics.median(every_step["plain"][args.warmup:]),
            "recorded_ratio": statistics.median(every_step["monitored"][args.warmup:])
            / statistics.median(every_step["plain"][args.warmup:]),
            "ddp_bytes": ddp_bytes,
            "monitor_bytes": statistics.median(recorded),
            "loop_ratio": sum(loop["monitored"]) / sum(loop["plain"]),
            "loop_recorded": sum(1 for s in range(args.loop_steps) if Schedule(DEFAULT_EVERY)(s)),
            "loop_collectives": len(loop["sent"]),
        }
    if rank == 0:
        (Path(folder) / "results.json").write_text(json.dumps(results))
    dist.destroy_process_group()


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40, help="timed steps of the recorded-step comparison")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--loop-steps", type=int, default=1000, help="steps of the whole-loop comparison")
    parser.add_argument("--problems", default="mlp,convnet")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        context = multiprocessing.get_context("spawn")
        processes = [context.Process(target=rank_main, args=(rank, folder, args)) for rank in range(WORLD)]
        for process in processes:
            process.start()
        for process in processes:
            process.join()
        if any(process.exitcode != 0 for process in processes):
            raise SystemExit(f"a rank failed: exit codes {[p.exitcode for p in processes]}")
        results = json.loads((Path(folder) / "results.json").read_text())
    print(f"torch {torch.__version__}, {WORLD} ranks, gloo, CPU, 1 thread each")
    print("\n| problem | plain DDP step | recorded step / plain DDP step | bytes sent: DDP step | + monitor's "
          f"recorded step | whole loop, {args.loop_steps} steps, every={DEFAULT_EVERY} / plain loop |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, r in results.items():
        extra = f"{r['monitor_bytes'] / 1e6:.2f} MB"
        print(f"| {name} | {r['plain_step_ms']:.1f} ms | {r['recorded_ratio']:.2f} | {r['ddp_bytes'] / 1e6:.2f} MB | "
              f"{extra} ({r['monitor_bytes'] / r['ddp_bytes']:.2f}x) | {r['loop_ratio']:.3f} "
              f"({r['loop_recorded']} recorded steps, {r['loop_collectives']} collectives) |")


if __name__ == "__main__":
    main()
