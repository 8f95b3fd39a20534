"""Run the `lossdiag` command as a user would: in this process through click's test runner (what the command
prints and its exit code, without a second torch import), or in a real process where only a process shows the
behaviour (the console script, Ctrl-C, a kill, resource limits, what reaches a real stderr)."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Callable, Mapping, NamedTuple, Optional

import pytest
from click.testing import CliRunner

from lossdiag.cli import main

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


class Completed(NamedTuple):
    """A command's exit code and output, shaped like subprocess.CompletedProcess (and unpackable)."""

    returncode: int
    stdout: str
    stderr: str


def invoke(*args: object, cwd: Optional[Path] = None, env: Optional[Mapping[str, str]] = None) -> Completed:
    """`lossdiag ARGS` in this process, in `cwd` and with `env` added to the environment. An exception the command
    line let escape is raised here, since a user would have seen a traceback."""
    with contextlib.chdir(cwd) if cwd is not None else contextlib.nullcontext():
        result = CliRunner().invoke(main, [str(a) for a in args], env=env, prog_name="lossdiag")
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Completed(result.exit_code, result.stdout, result.stderr)


def run_cli(*args: object, cwd: Optional[Path] = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m lossdiag ARGS` in a real process, with captured text output and no standard input."""
    return subprocess.run([sys.executable, "-m", "lossdiag", *map(str, args)], cwd=cwd, env=ENV,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)


def run_json(*args: object, cwd: Optional[Path] = None) -> tuple[int, dict]:
    """Run in this process with --json and parse the summary printed on stdout."""
    completed = invoke(*args, "--json", cwd=cwd)
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


LINEAR_MODEL = textwrap.dedent("""
    import os
    import sys
    import time
    from pathlib import Path

    import torch
    import torch.nn as nn

    def build_model():
        torch.manual_seed(0)
        return nn.Linear(3, 2)

    def batches():
        g = torch.Generator().manual_seed(0)
        return [torch.randn(8, 3, generator=g) for _ in range(4)]

    CALLS = [0]
    NAMES = ["a", "b"]

    def before_call(call):
        \"\"\"What a test appends replaces this, to fail, slow down or exit at a given call of losses().\"\"\"

    def losses(model, x):
        CALLS[0] += 1
        before_call(CALLS[0])
        out = model(x)
        return {NAMES[0]: out[:, 0].pow(2).mean(), NAMES[1]: (out[:, 1] - 1).pow(2).mean()}
""")


def model_file(folder: Path, extra: str = "") -> Path:
    """A two-term model file in `folder`, with `extra` source appended (it may redefine any name)."""
    path = folder / "model.py"
    path.write_text(LINEAR_MODEL + textwrap.dedent(extra))
    return path
