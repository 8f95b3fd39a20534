"""Wall time of the real CLI with default settings: `lossdiag profile` (profile plus checks), `lossdiag check` and
`lossdiag sweep`.

Runs each command as a subprocess, as a user would, several times, and prints every time, the median and the
budget it is held to. Run: python benchmarks/bench_cli_time.py [MODEL_PY] [--repeat N] [--commands profile sweep ...]
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "notebooks_examples" / "two_outputs.py"
BUDGETS = {"profile": 30.0, "check": 15.0, "sweep": 60.0}


def _cpu_of_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def wall_time(command: str, model: Path, out: Path) -> tuple[float, float, int]:
    """Wall seconds one `python -m lossdiag COMMAND MODEL --out OUT` takes (start-up included), the CPU seconds
    it and its worker processes used (what a shared machine's load does not inflate), and its exit code."""
    env = dict(os.environ)
    cpu = _cpu_of_children()
    started = time.perf_counter()
    completed = subprocess.run([sys.executable, "-m", "lossdiag", command, str(model), "--out", str(out)],
                               env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if completed.returncode not in (0, 1):
        sys.exit(f"{command} failed with exit code {completed.returncode}:\n{completed.stderr}")
    return elapsed, _cpu_of_children() - cpu, completed.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", type=Path, default=EXAMPLE)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--commands", nargs="+", choices=list(BUDGETS), default=list(BUDGETS))
    args = parser.parse_args()
    print(f"model {args.model}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset (torch default)')}, "
          f"{os.cpu_count()} cpus, {args.repeat} runs each (interleaved)")
    times: dict[str, list[float]] = {command: [] for command in args.commands}
    with tempfile.TemporaryDirectory() as folder:
        for run in range(args.repeat):
            for command in args.commands:
                elapsed, cpu, code = wall_time(command, args.model, Path(folder) / f"{command}-{run}")
                times[command].append(elapsed)
                print(f"  lossdiag {command:7} run {run + 1}: {elapsed:6.2f} s, {cpu:6.2f} s of CPU (exit {code}; "
                      f"load average {os.getloadavg()[0]:.1f})")
    for command in args.commands:
        budget = BUDGETS[command]
        median, worst = statistics.median(times[command]), max(times[command])
        verdict = "within" if worst < budget else "OVER"
        print(f"lossdiag {command:7} median {median:6.2f} s, max {worst:6.2f} s: {verdict} the {budget:g} s budget")


if __name__ == "__main__":
    main()
