"""The installed `lossdiag` console script in a real process: what the in-process tests cannot show (the entry
point, the real stderr a user sees, no traceback from the interpreter itself)."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cli_helpers import ENV

SCRIPT = Path(sys.executable).with_name("lossdiag")


@pytest.fixture
def script() -> str:
    if not SCRIPT.exists():
        pytest.skip(f"no console script beside {sys.executable}: install lossdiag (pip install -e .)")
    return str(SCRIPT)


def test_the_console_script_prints_its_version(script):
    completed = subprocess.run([script, "--version"], env=ENV, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0 and completed.stdout.startswith("lossdiag, version "), completed.stderr


def test_a_broken_model_file_through_the_console_script_is_one_line_and_exit_2(script, fixtures, tmp_path):
    model = shutil.copy(fixtures / "broken_losses_raise.py", tmp_path / "model.py")
    completed = subprocess.run([script, "profile", str(model), "--out", str(tmp_path / "out")], env=ENV,
                               stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 2, completed.stderr[-2000:]
    assert completed.stderr.startswith("lossdiag: error: ") and completed.stderr.count("\n") == 1, completed.stderr
    assert "losses(model, batch) at step 0 raised RuntimeError" in completed.stderr
    assert "Traceback" not in completed.stderr and completed.stdout == ""
    assert not (tmp_path / "out").exists()
