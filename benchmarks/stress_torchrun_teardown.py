"""Repeat notebooks_examples/ddp_loop.py under torchrun beside a CPU-bound process and count the runs that abort.

Each run launches the example on 2 ranks (gloo, one thread each) while a busy-loop process competes for the CPU,
the load under which a rank used to be killed by SIGABRT at exit ("terminate called without an active
exception"). Runs alternate between the monitored loop and `--no-monitor`. Prints one JSON line: the runs, how
many failed, how many of those were aborts, and the tail of each failure's output. Slow (about a minute a run on a
loaded 2-core machine); opt-in, not part of the test suite.

Run: python benchmarks/stress_torchrun_teardown.py [--runs 20]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "notebooks_examples" / "ddp_loop.py"
ABORT_SIGNS = ("terminate called", "SIGABRT", "Signal 6", "exitcode  : -6")


def one_run(folder: Path, index: int) -> dict:
    """One torchrun of the example; its return code, whether it aborted, and its output's tail on failure."""
    options = ["--out", f"run{index}", "--every", "7"] + (["--no-monitor"] if index % 2 else [])
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(EXAMPLE), *options]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=600)
    output = done.stdout + done.stderr
    report_written = index % 2 == 1 or (folder / f"run{index}" / "report.html").is_file()
    return {"run": index, "monitor": index % 2 == 0, "returncode": done.returncode,
            "aborted": any(sign in output for sign in ABORT_SIGNS), "report_written": report_written,
            "tail": "" if done.returncode == 0 else output[-1500:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        with tempfile.TemporaryDirectory() as folder:
            runs = []
            for index in range(args.runs):
                runs.append(one_run(Path(folder), index))
                print(f"run {index}: returncode {runs[-1]['returncode']}", file=sys.stderr, flush=True)
    finally:
        busy.kill()
        busy.wait()
    failed = [run for run in runs if run["returncode"] != 0 or not run["report_written"]]
    print(json.dumps({"runs": len(runs), "failed": len(failed), "aborted": sum(run["aborted"] for run in runs),
                      "failures": failed}))


if __name__ == "__main__":
    main()
