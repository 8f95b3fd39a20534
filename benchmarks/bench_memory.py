"""Peak memory of a training loop that takes per-term gradients, against the plain loop and the peers.

Each method trains a fresh problem from benchmarks/models.py (SGD, lr 1e-3) for --steps steps in its own
subprocess (`--child METHOD PROBLEM STEPS`), so its peak resident set size (ru_maxrss, Linux) is its own.
Every child imports the same modules (peers included) before training, so the peaks differ by training alone.
The table gives each peak, its excess over the plain loop's, and that excess in units of the model's parameter
memory and of its shared parameters' memory: a recorded step holds the K per-term gradients and, for the Gram
matrix, pieces of at most a few MiB, so its excess stays under (K + 1) x the shared parameters' memory. The `wide`
problem (12.6M shared parameters, --wide-steps steps) is where that bound is measured. A Monitor's peak is read before close() and
again after it (close() draws the report's figures with matplotlib, unrelated to training). One more child runs
the Monitor at the default schedule for --growth-steps steps on the MLP and compares its RSS after 20% of the
steps with its RSS at the end, to show that nothing grows with the number of steps.

glibc's malloc raises its mmap threshold as large blocks are freed, so activations then come from the heap, where
a few small tensors that outlive a step keep freed memory from going back: RSS that
no live tensor holds. --mmap-threshold BYTES fixes the threshold in the children (MALLOC_MMAP_THRESHOLD_), which
separates the memory held from that fragmentation.

Run: OMP_NUM_THREADS=1 python benchmarks/bench_memory.py [--steps 300] [--wide-steps 20] [--growth-steps 2000]
     [--problems mlp,convnet,wide] [--mmap-threshold 65536]   (--growth-steps 0 skips the growth run)
Peers (optional): pip install --no-deps -c constraints.txt -r benchmarks/requirements-peers.txt
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_monitor import monitored_step, plain_step  # noqa: E402
from benchmarks.bench_record import Step, lossdiag_step  # noqa: E402
from benchmarks.models import Problem, convnet_problem, mlp_problem  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402
from benchmarks.peers import _libmtl_weighting_class, libmtl_step, naive_step, torchjd_step  # noqa: E402
from lossdiag import Monitor  # noqa: E402
from lossdiag.record.schedule import DEFAULT_EVERY  # noqa: E402



def wide_problem(seed: int = 0) -> Problem:
    """A trunk of three 2048 x 2048 layers (12.6M shared parameters, 48 MiB) and two heads, batch 16, K = 2: the
    per-term gradients, not the activations, decide its memory."""
    torch.manual_seed(seed)
    model = nn.ModuleDict({"trunk": nn.Sequential(*[nn.Sequential(nn.Linear(2048, 2048), nn.Tanh()) for _ in range(3)]),
                           "first": nn.Linear(2048, 8), "second": nn.Linear(2048, 1)})

    def make_batch(step: int) -> dict[str, torch.Tensor]:
        gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
        x = torch.randn(16, 2048, generator=gen)
        return {"x": x, "label": torch.randint(0, 8, (16,), generator=gen), "target": x[:, 0]}

    def losses(m: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        h = m["trunk"](batch["x"])
        return {"classification": F.cross_entropy(m["first"](h), batch["label"]),
                "regression": F.mse_loss(m["second"](h).squeeze(-1), batch["target"])}

    return Problem("wide", model, make_batch, losses, "trunk")


PROBLEMS = {"mlp": mlp_problem, "convnet": convnet_problem, "wide": wide_problem}
METHODS = {
    "plain": "plain loop",
    "profile": "lossdiag profile, recorded step on every step",
    "monitor": f"Monitor, scope=all, every={DEFAULT_EVERY} (default)",
    "monitor-every1": "Monitor, scope=all, every=1",
    "monitor-representation": "Monitor, scope=representation, every=1",
    "naive": "naive: K x backward(retain_graph) + training backward",
    "torchjd": "torchjd 0.18 mtl_backward, parallel_chunk_size=1",
    "libmtl": "LibMTL 1.1.5 per-task gradients",
}
MONITORS = {"monitor": (DEFAULT_EVERY, "all"), "monitor-every1": (1, "all"),
            "monitor-representation": (1, "representation")}


def peak_kib() -> int:
    """Peak resident set size of this process so far (KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def rss_kib() -> int:
    """Current resident set size of this process (Linux)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") // 1024


def make_step(method: str, problem: Problem, out: Path) -> tuple[Step, Monitor | None]:
    """The method's training step on `problem`, and the Monitor it uses, if any."""
    if method in MONITORS:
        every, scope = MONITORS[method]
        at = problem.representation if scope == "representation" else None
        monitor = Monitor(problem.model, out=out, every=every, scope=scope, at=at)
        return monitored_step(monitor), monitor
    steps: dict[str, Step] = {
        "plain": plain_step,
        "profile": lossdiag_step(),
        "naive": naive_step,
        "torchjd": lambda p, o, b: torchjd_step(p, o, b, parallel_chunk_size=1),
        "libmtl": libmtl_step,
    }
    return steps[method], None


def child(method: str, problem_name: str, steps: int) -> dict:
    """Train `steps` steps with `method` in this process; the memory it took, as plain data."""
    torch.set_num_threads(1)
    try:  # the peers' imports, in every child, so that they weigh alike in every baseline
        import torchjd.autojac  # noqa: F401
        _libmtl_weighting_class()
    except ImportError as exc:
        if method in ("torchjd", "libmtl"):
            return {"skipped": str(exc)}
    baseline = peak_kib()
    problem = PROBLEMS[problem_name]()
    params = sum(p.numel() * p.element_size() for p in problem.model.parameters())
    shared = sum(p.numel() * p.element_size() for p in problem.shared_parameters())
    terms = len(problem.losses(problem.model, problem.make_batch(0)))
    opt = torch.optim.SGD(problem.model.parameters(), lr=1e-3)
    result = {"params_kib": params / 1024, "shared_kib": shared / 1024, "terms": terms, "baseline_kib": baseline}
    with tempfile.TemporaryDirectory() as folder:
        step, monitor = make_step(method, problem, Path(folder))
        for index in range(steps):
            step(problem, opt, problem.make_batch(index))
            if index + 1 == max(steps // 5, 1):
                result.update(rss_20_kib=rss_kib(), peak_20_kib=peak_kib())
        result.update(rss_end_kib=rss_kib(), peak_kib=peak_kib())
        if monitor is not None:
            monitor.close()
            result["close_peak_kib"] = peak_kib()
    return result


def run_child(method: str, problem: str, steps: int, env: dict[str, str]) -> dict:
    """Run one child in a fresh interpreter and read the JSON line it prints."""
    command = [sys.executable, __file__, "--child", method, problem, str(steps)]
    done = subprocess.run(command, check=False, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{method} on {problem} failed:\n{done.stderr}")
    return json.loads(done.stdout.splitlines()[-1])


def mib(kib: float) -> str:
    """KiB as MiB, one decimal."""
    return f"{kib / 1024:.1f}"


def table(problem: str, steps: int, env: dict[str, str]) -> None:
    """Run every method on `problem` and print the markdown table."""
    results = {}
    for method in METHODS:
        results[method] = run_child(method, problem, steps, env)
        if "skipped" in results[method]:
            print(f"  {method} skipped: {results[method]['skipped']}", file=sys.stderr)
    plain = results["plain"]
    print(f"\n### {problem}: {steps} steps; parameters {mib(plain['params_kib'])} MiB, shared "
          f"{mib(plain['shared_kib'])} MiB; K = {plain['terms']}; after imports {mib(plain['baseline_kib'])} MiB\n")
    print("| method | peak RSS (MiB) | extra over plain loop (MiB) | extra / parameter memory | "
          "extra / shared parameter memory | peak after close() (MiB) |\n| --- | --- | --- | --- | --- | --- |")
    for method, result in results.items():
        if "skipped" in result:
            continue
        extra = result["peak_kib"] - plain["peak_kib"]
        closing = mib(result["close_peak_kib"]) if "close_peak_kib" in result else "-"
        print(f"| {METHODS[method]} | {mib(result['peak_kib'])} | {extra / 1024:+.1f} | "
              f"{extra / plain['params_kib']:+.1f} | {extra / plain['shared_kib']:+.2f} | {closing} |")


def growth(steps: int, env: dict[str, str]) -> None:
    """Print how the default-schedule Monitor's memory moves between 20% of `steps` and the end (MLP)."""
    result = run_child("monitor", "mlp", steps, env)
    print(f"\nGrowth, {METHODS['monitor']} on mlp, {steps} steps: RSS after {max(steps // 5, 1)} steps "
          f"{mib(result['rss_20_kib'])} MiB, at the end {mib(result['rss_end_kib'])} MiB "
          f"({(result['rss_end_kib'] - result['rss_20_kib']) / 1024:+.1f} MiB); peak "
          f"{mib(result['peak_20_kib'])} -> {mib(result['peak_kib'])} MiB "
          f"({(result['peak_kib'] - result['peak_20_kib']) / 1024:+.1f} MiB), before close()")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--growth-steps", type=int, default=2000)
    parser.add_argument("--problems", default="mlp,convnet,wide")
    parser.add_argument("--wide-steps", type=int, default=20, help="steps on the 12.6M-parameter problem")
    parser.add_argument("--mmap-threshold", type=int, help="glibc's MALLOC_MMAP_THRESHOLD_ for the children")
    parser.add_argument("--child", nargs=3, metavar=("METHOD", "PROBLEM", "STEPS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        method, problem, steps = args.child
        print(json.dumps(child(method, problem, int(steps))))
        return
    start = time.perf_counter()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    allocator = "glibc's default malloc"
    if args.mmap_threshold is not None:
        env["MALLOC_MMAP_THRESHOLD_"] = str(args.mmap_threshold)
        allocator = f"MALLOC_MMAP_THRESHOLD_={args.mmap_threshold}"
    print(f"torch {torch.__version__}, 1 thread, one fresh process per method, {allocator}; peak RSS is ru_maxrss")
    for problem in args.problems.split(","):
        table(problem, args.wide_steps if problem == "wide" else args.steps, env)
    if args.growth_steps:
        growth(args.growth_steps, env)
    print(f"\nwall time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
