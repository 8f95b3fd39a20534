"""Run the real `lossdiag` command in a subprocess, as a user would."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

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


def kill_when(child: subprocess.Popen, ready: Callable[[], bool], timeout: float, waiting_for: str) -> None:
    """SIGKILL `child` (started with stderr=PIPE) once `ready()` holds; fail if it stops first or `timeout` passes."""
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            if child.poll() is not None:
                pytest.fail(f"the process stopped: {child.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"{waiting_for} did not happen within {timeout:g} s")
            time.sleep(0.1)
        child.send_signal(signal.SIGKILL)
        child.wait()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stderr.close()
