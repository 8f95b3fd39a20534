"""Wall time of the real CLI with default settings: `lossdiag profile` (profile plus checks), `lossdiag check` and
`lossdiag sweep`, and what a whole default profile costs against plain training of the same model.

Runs each command as a subprocess, as a user would, several times, and prints every time, the median and the
budget it is held to. `train` is a plain PyTorch loop (tests/outcomes.py: the model file's optimizer, its weights)
for the profile's `--steps` in a subprocess of its own; with `train` and `profile` both measured, interleaved, the
median profile time is also printed as a ratio to the median training time (issue 15's goal: at most 6x).
Run: python benchmarks/bench_cli_time.py [MODEL_PY ...] [--repeat N] [--commands train profile check sweep]
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lossdiag.config import Config

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "notebooks_examples" / "two_outputs.py"
BUDGETS = {"profile": 30.0, "check": 15.0, "sweep": 60.0}
RATIO_GOAL = 6.0
# A plain training loop of the model file (argv: model, steps, the tests folder); prints the loop's own seconds.
PLAIN_TRAINING = """
import sys, time
sys.path.insert(0, sys.argv[3])
import outcomes
module = outcomes.load(sys.argv[1])
weights = outcomes.weights_in_force(module, outcomes.term_names(module))
started = time.perf_counter()
outcomes.train(module, weights, int(sys.argv[2]), seed=0)
print(f"{time.perf_counter() - started:.3f}")
"""


def _cpu_of_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _arguments(command: str, model: Path, out: Path) -> list[str]:
    if command == "train":
        return [sys.executable, "-c", PLAIN_TRAINING, str(model), str(Config().steps), str(ROOT / "tests")]
    return [sys.executable, "-m", "lossdiag", command, str(model), "--out", str(out)]


def wall_time(command: str, model: Path, out: Path) -> tuple[float, float, int, str]:
    """Wall seconds one `python -m lossdiag COMMAND MODEL --out OUT` (or the plain training loop, for `train`)
    takes, start-up included, the CPU seconds it and its worker processes used (what a shared machine's load
    does not inflate), its exit code and its standard output."""
    env = dict(os.environ)
    cpu = _cpu_of_children()
    started = time.perf_counter()
    completed = subprocess.run(_arguments(command, model, out),
                               env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if completed.returncode not in (0, 1):
        sys.exit(f"{command} failed with exit code {completed.returncode}:\n{completed.stderr}")
    return elapsed, _cpu_of_children() - cpu, completed.returncode, completed.stdout


@dataclasses.dataclass
class Measured:
    """Each command's wall and CPU seconds over the runs, and the plain training loop's own seconds (no start-up)."""

    wall: dict[str, list[float]]
    cpu: dict[str, list[float]]
    loop: list[float]


def measure(model: Path, commands: list[str], repeat: int) -> Measured:
    """Run each command `repeat` times on one model, interleaved run by run so load drifts hit all alike."""
    print(f"model {model}")
    found = Measured({command: [] for command in commands}, {command: [] for command in commands}, [])
    with tempfile.TemporaryDirectory() as folder:
        for run in range(repeat):
            for command in commands:
                elapsed, cpu, code, output = wall_time(command, model, Path(folder) / f"{command}-{run}")
                found.wall[command].append(elapsed)
                found.cpu[command].append(cpu)
                loop = ""
                if command == "train":
                    found.loop.append(float(output))
                    loop = f", the loop alone {found.loop[-1]:.2f} s"
                print(f"  {command:7} run {run + 1}: {elapsed:6.2f} s, {cpu:6.2f} s of CPU (exit {code}; "
                      f"load average {os.getloadavg()[0]:.1f}){loop}")
    return found


def report(found: Measured) -> None:
    """Each command's median and max against its budget, and the profile's cost as a multiple of plain training."""
    for command, measured in found.wall.items():
        median, worst = statistics.median(measured), max(measured)
        if command == "train":
            print(f"plain training, {Config().steps} steps: median {median:6.2f} s, max {worst:6.2f} s")
            continue
        verdict = "within" if worst < BUDGETS[command] else "OVER"
        print(f"lossdiag {command:7} median {median:6.2f} s, max {worst:6.2f} s: {verdict} the "
              f"{BUDGETS[command]:g} s budget")
    if "train" in found.wall and "profile" in found.wall:
        profile = statistics.median(found.wall["profile"])
        ratio = profile / statistics.median(found.wall["train"])
        cpu_ratio = statistics.median(found.cpu["profile"]) / statistics.median(found.cpu["train"])
        verdict = "within" if ratio <= RATIO_GOAL else "OVER"
        print(f"whole default profile / {Config().steps} plain training steps (medians, start-up in both): wall "
              f"{ratio:.2f}x, {verdict} the {RATIO_GOAL:g}x goal; CPU {cpu_ratio:.2f}x; against the training loop "
              f"alone (no start-up): {profile / statistics.median(found.loop):.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", type=Path, default=[EXAMPLE])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--commands", nargs="+", choices=["train", *BUDGETS], default=list(BUDGETS))
    args = parser.parse_args()
    print(f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset (torch default)')}, "
          f"{os.cpu_count()} cpus, {args.repeat} runs each (interleaved)")
    for model in args.models:
        report(measure(model, args.commands, args.repeat))


if __name__ == "__main__":
    main()
