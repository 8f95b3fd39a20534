"""Run the real `lossdiag` command in a subprocess, as a user would."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m lossdiag ARGS` with captured text output and no standard input."""
    return subprocess.run([sys.executable, "-m", "lossdiag", *map(str, args)], cwd=cwd, env=ENV,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)


def run_json(*args: str, cwd: Path | None = None) -> tuple[int, dict]:
    """Run with --json and parse the summary printed on stdout."""
    completed = run_cli(*args, "--json", cwd=cwd)
    assert completed.stdout.strip(), completed.stderr
    return completed.returncode, json.loads(completed.stdout)
