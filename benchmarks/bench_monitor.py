"""Cost of lossdiag.Monitor in a training loop: the plain loop against the monitored loop (default sampling and
every=1, each scope), and the peers' ways of getting the same per-term gradients, interleaved in one process.

Every method trains its own copy of the problem (SGD, lr 1e-3) on the same batches and they take turns on every
step, in a rotating order, so drift and contention hit them alike. Two tables per problem:
- default sampling: the whole loop over --steps steps (ratio of summed step times to the plain loop's), which
  is what a training run pays, the monitor's recorded steps and its 2-second flushes included;
- every step: median time of a step that records per-term gradients, over --every-one-steps steps after
  --warmup, against the median plain step; the peers (torchjd, LibMTL) produce the same information every step;
- combine: the host time a step the monitor does not record adds, as the difference between --combine-calls calls
  of `monitor.combine(terms, weights)` and of the plain weighted sum on the same terms (its 2-second flushes and
  full-slot flushes included, as a loop pays them), median of 5 rounds: a micro-benchmark;
- hot-path: the monitor's cost in the loop itself, at each of --hot-threads: the plain loop and the monitored one
  (scope='all', default schedule) take turns step by step, --repeats times per problem of --hot-problems; the
  whole loop's ratio, the time a non-recorded step adds (median over those steps of monitored minus plain step),
  and the host time combine() adds over the plain sum inside those steps; medians over the repeats, with their
  range and the machine's load average.

Run: python benchmarks/bench_monitor.py [--threads 1] [--steps 1000] [--every-one-steps 40] [--device cpu]
     [--tables loop,every-step,combine,hot-path] [--hot-threads 1,2] [--hot-problems mlp:1000,mlp128:600]
Peers (optional): pip install --no-deps -c constraints.txt -r benchmarks/requirements-peers.txt
"""
from __future__ import annotations

import argparse
import copy
import functools
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.models import Batch, Problem, convnet_problem, mlp_problem  # noqa: E402
from benchmarks.peers import libmtl_step, naive_step, torchjd_step  # noqa: E402
from lossdiag import Monitor  # noqa: E402
from lossdiag.record.schedule import DEFAULT_EVERY, Schedule  # noqa: E402

Step = Callable[[Problem, torch.optim.Optimizer, Batch], object]
SCOPES = ("all", "last-layer", "representation")
INFORMATION = {"all": "exact", "last-layer": "proxy", "representation": "proxy"}


def total(terms: dict[str, torch.Tensor]) -> torch.Tensor:
    """The plain loop's loss: the terms summed in order, as Monitor.combine sums them."""
    result = None
    for value in terms.values():
        result = value if result is None else result + value
    return result


def plain_step(problem: Problem, opt: torch.optim.Optimizer, batch: Batch) -> None:
    """The reference loop: forward, backward of the sum, optimizer step."""
    opt.zero_grad()
    total(problem.losses(problem.model, batch)).backward()
    opt.step()


def monitored_step(monitor: Monitor) -> Step:
    """The same loop with its sum taken by `monitor.combine`: the one changed line."""

    def step(problem: Problem, opt: torch.optim.Optimizer, batch: Batch) -> None:
        opt.zero_grad()
        monitor.combine(problem.losses(problem.model, batch)).backward()
        opt.step()

    return step


def timed_step(losses_sum: Callable[[Problem, Batch], torch.Tensor], calls: list[float]) -> Step:
    """A loop step whose summing line (`losses_sum`) is timed into `calls`, seconds each."""

    def step(problem: Problem, opt: torch.optim.Optimizer, batch: Batch) -> None:
        opt.zero_grad()
        terms = problem.losses(problem.model, batch)
        start = time.perf_counter()
        loss = losses_sum(terms)
        calls.append(time.perf_counter() - start)
        loss.backward()
        opt.step()

    return step


def _to(batch: Batch, device: torch.device) -> Batch:
    return {key: value.to(device) for key, value in batch.items()}


def _available(step: Step, problem: Problem, device: torch.device) -> bool:
    try:
        clone = copy.deepcopy(problem)
        step(clone, torch.optim.SGD(clone.model.parameters(), lr=1e-3), _to(clone.make_batch(0), device))
        return True
    except ImportError as exc:
        print(f"  skipped: {exc}", file=sys.stderr)
        return False


def interleave(problem: Problem, makers: dict[str, Callable[[Problem], Step]], steps: int,
               device: torch.device) -> dict[str, list[float]]:
    """Seconds per step of each method, the methods taking turns on every step in a rotating order.

    `makers` build each method's step from its own copy of the problem (a monitor attaches to that copy).
    """
    copies = {name: copy.deepcopy(problem) for name in makers}
    for clone in copies.values():
        clone.model.to(device)
    methods = {name: make(copies[name]) for name, make in makers.items()}
    optimizers = {name: torch.optim.SGD(clone.model.parameters(), lr=1e-3) for name, clone in copies.items()}
    times: dict[str, list[float]] = {name: [] for name in makers}
    names = list(makers)
    for index in range(steps):
        batch = _to(problem.make_batch(index), device)
        for name in names[index % len(names):] + names[:index % len(names)]:
            start = time.perf_counter()
            methods[name](copies[name], optimizers[name], batch)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - start)
    return times


def default_sampling(problem: Problem, steps: int, device: torch.device, out: Path) -> list[tuple[str, str]]:
    """Rows for the whole loop at the default schedule, one per scope."""
    monitors: dict[str, Monitor] = {}

    def attach(scope: str) -> Callable[[Problem], Step]:
        def make(clone: Problem) -> Step:
            at = clone.representation if scope == "representation" else None
            monitors[scope] = Monitor(clone.model, out=out / f"{problem.name}-{scope}", scope=scope, at=at)
            return monitored_step(monitors[scope])
        return make

    makers = {"plain": lambda clone: plain_step, **{scope: attach(scope) for scope in SCOPES}}
    times = interleave(problem, makers, steps, device)
    recorded = sum(1 for s in range(steps) if Schedule(DEFAULT_EVERY)(s))
    plain = sum(times["plain"])
    rows = [("plain loop", "1.000")]
    for scope in SCOPES:
        start = time.perf_counter()
        monitors[scope].close()
        closing = time.perf_counter() - start
        quiet = [m / p for m, p, s in zip(times[scope], times["plain"], range(steps)) if not Schedule(DEFAULT_EVERY)(s)]
        rows.append((f"monitor, scope={scope}, every={DEFAULT_EVERY} ({recorded} of {steps} steps recorded)",
                     f"{sum(times[scope]) / plain:.3f} (unrecorded step: median {statistics.median(quiet):.3f}; "
                     f"close(): {closing:.1f} s once)"))
    print(f"  plain step: median {statistics.median(times['plain']) * 1e3:.2f} ms", file=sys.stderr)
    return rows


def every_step(problem: Problem, steps: int, warmup: int, device: torch.device, out: Path) -> list[tuple[str, str]]:
    """Rows for steps that all record per-term gradients: the monitor at every=1 per scope, and the peers."""

    def attach(scope: str) -> Callable[[Problem], Step]:
        def make(clone: Problem) -> Step:
            at = clone.representation if scope == "representation" else None
            monitor = Monitor(clone.model, out=out / f"{problem.name}-{scope}-every1", every=1, scope=scope, at=at)
            monitors.append(monitor)
            return monitored_step(monitor)
        return make

    monitors: list[Monitor] = []
    peers: dict[str, tuple[str, Step]] = {
        "naive: K x backward(retain_graph) + the training backward": ("exact", naive_step),
        "torchjd 0.18 mtl_backward + jac_to_grad": ("exact below the features", torchjd_step),
        "torchjd 0.18 mtl_backward, parallel_chunk_size=1": (
            "exact below the features", lambda p, o, b: torchjd_step(p, o, b, parallel_chunk_size=1)),
        "LibMTL 1.1.5 per-task gradients (rep_grad=False)": ("exact", libmtl_step),
    }
    available = {name: step for name, (_, step) in peers.items() if _available(step, problem, device)}
    makers: dict[str, Callable[[Problem], Step]] = {"plain": lambda clone: plain_step}
    makers.update({f"monitor, scope={scope}, every=1": attach(scope) for scope in SCOPES})
    makers.update({name: (lambda step: lambda clone: step)(step) for name, step in available.items()})
    times = interleave(problem, makers, warmup + steps, device)
    for monitor in monitors:
        monitor.close()
    plain = statistics.median(times["plain"][warmup:])
    information = {**{f"monitor, scope={s}, every=1": INFORMATION[s] for s in SCOPES},
                   **{name: info for name, (info, _) in peers.items()}, "plain": "none"}
    return [(f"{name} [{information[name]}]", f"{statistics.median(values[warmup:]) / plain:.3f}")
            for name, values in times.items()]


def combine_overhead(problem: Problem, calls: int, device: torch.device, out: Path) -> tuple[float, float]:
    """Microseconds a non-recorded combine() adds to the plain weighted sum (median of 5 rounds), and the plain
    sum's own time."""
    model = copy.deepcopy(problem.model).to(device)
    terms = problem.losses(model, _to(problem.make_batch(0), device))
    weights = {name: 0.5 for name in terms}
    monitor = Monitor(model, out=out / f"{problem.name}-combine", every=10 ** 9, early=False)
    monitor.combine(terms, weights)  # step 0 is recorded; every later call is not

    def plain() -> None:
        total = None
        for name, value in terms.items():
            part = weights[name] * value
            total = part if total is None else total + part

    def monitored() -> None:
        monitor.combine(terms, weights)

    rounds = {"plain": [], "monitored": []}
    for _ in range(5):
        for name, call in (("plain", plain), ("monitored", monitored)):
            start = time.perf_counter()
            for _ in range(calls):
                call()
            if device.type == "cuda":
                torch.cuda.synchronize()
            rounds[name].append((time.perf_counter() - start) / calls * 1e6)
    monitor.close()
    extra = statistics.median(m - p for m, p in zip(rounds["monitored"], rounds["plain"]))
    return extra, statistics.median(rounds["plain"])


def hot_path(problem: Problem, steps: int, device: torch.device, out: Path) -> dict[str, float]:
    """One run of the plain and the monitored loop (scope='all', default schedule) taking turns step by step:
    the whole loop's ratio, the time a non-recorded step adds in microseconds (median over those steps of the
    monitored step minus the plain one at the same step), the host time combine() adds over the plain sum in
    those steps (median, microseconds), and the load average over the run."""
    calls: dict[str, list[float]] = {"plain": [], "monitor": []}
    monitors: list[Monitor] = []

    def attach(clone: Problem) -> Step:
        monitors.append(Monitor(clone.model, out=out / f"{problem.name}-hot-{len(os.listdir(out))}"))
        return timed_step(monitors[-1].combine, calls["monitor"])

    load = os.getloadavg()[0]
    times = interleave(problem, {"plain": lambda clone: timed_step(total, calls["plain"]), "monitor": attach},
                       steps, device)
    monitors[0].close()
    schedule = Schedule(DEFAULT_EVERY)
    quiet = [s for s in range(steps) if not schedule(s)]
    return {"ratio": sum(times["monitor"]) / sum(times["plain"]),
            "step_us": statistics.median(times["monitor"][s] - times["plain"][s] for s in quiet) * 1e6,
            "call_us": statistics.median(calls["monitor"][s] - calls["plain"][s] for s in quiet) * 1e6,
            "plain_ms": statistics.median(times["plain"]) * 1e3, "load": (load + os.getloadavg()[0]) / 2}


def hot_path_rows(problems: dict[str, Callable[[], Problem]], plan: str, threads: list[int], repeats: int,
                  device: torch.device, out: Path) -> list[str]:
    """The hot-path table's rows: per problem and thread count, medians over `repeats` runs and their ranges."""
    rows = []
    for item in plan.split(","):
        name, steps = item.split(":")
        for count in threads:
            torch.set_num_threads(count)
            runs = [hot_path(problems[name](), int(steps), device, out) for _ in range(repeats)]
            cells = []
            for key, digits in (("ratio", 3), ("step_us", 0), ("call_us", 1), ("plain_ms", 2)):
                values = [run[key] for run in runs]
                cells.append(f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}-"
                             f"{max(values):.{digits}f})")
            loads = [run["load"] for run in runs]
            rows.append(f"| {name} | {steps} | {count} | {' | '.join(cells)} | {min(loads):.1f}-{max(loads):.1f} |")
            print(rows[-1], file=sys.stderr)
    return rows


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000, help="steps of the default-sampling comparison")
    parser.add_argument("--every-one-steps", type=int, default=40, help="timed steps of the every-step comparison")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--problems", default="mlp,convnet")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own choice)")
    parser.add_argument("--combine-calls", type=int, default=20000)
    parser.add_argument("--tables", default="loop,every-step,combine,hot-path")
    parser.add_argument("--hot-problems", default="mlp:1000,mlp128:600", help="problem:steps of the hot-path table")
    parser.add_argument("--hot-threads", default="1,2", help="torch thread counts of the hot-path table")
    parser.add_argument("--repeats", type=int, default=3, help="runs per row of the hot-path table")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    tables = args.tables.split(",")
    device = torch.device(args.device)
    problems = {"mlp": mlp_problem, "mlp128": functools.partial(mlp_problem, width=128), "convnet": convnet_problem}
    print(f"torch {torch.__version__}, device {device}, {torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory() as folder:
        for name in args.problems.split(",") if args.problems else []:
            problem = problems[name]()
            if "loop" in tables:
                print(f"\n### {name}: the whole loop, {args.steps} steps, ratio to the plain loop\n")
                print("| loop | time / plain loop |\n| --- | --- |")
                for label, value in default_sampling(problem, args.steps, device, Path(folder)):
                    print(f"| {label} | {value} |")
            if "every-step" in tables:
                print(f"\n### {name}: a step that records per-term gradients, median of {args.every_one_steps} "
                      f"after {args.warmup} warm-up steps, ratio to the median plain step\n")
                print("| method [information] | time / plain step |\n| --- | --- |")
                for label, value in every_step(problem, args.every_one_steps, args.warmup, device, Path(folder)):
                    print(f"| {label} | {value} |")
            if "combine" in tables:
                extra, plain = combine_overhead(problem, args.combine_calls, device, Path(folder))
                print(f"\n{name}: a non-recorded combine() adds {extra:.1f} us of host time to the plain weighted "
                      f"sum ({plain:.1f} us), over {args.combine_calls} calls, median of 5 rounds")
        if "hot-path" in tables:
            print(f"\n### In the loop: plain and monitored steps (scope='all', default schedule) taking turns, median "
                  f"of {args.repeats} runs (range)\n")
            print("| problem | steps | threads | whole loop / plain loop | added per non-recorded step (us) | "
                  "combine() over the plain sum in those steps (us) | plain step (ms) | load average |\n"
                  "| --- | --- | --- | --- | --- | --- | --- | --- |")
            threads = [int(count) for count in args.hot_threads.split(",")]
            for row in hot_path_rows(problems, args.hot_problems, threads, args.repeats, device, Path(folder)):
                print(row)


if __name__ == "__main__":
    main()
