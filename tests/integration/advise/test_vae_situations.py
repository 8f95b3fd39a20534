"""A VAE profiled as a user would: `progress` writes null for KL, whose relative drop from near 0 means nothing (the
displays say 'from ~0')."""
from __future__ import annotations

import json
import pytest

from cli_helpers import run_cli
from paths import FIXTURES


@pytest.fixture(scope="module")
def profiled(tmp_path_factory):
    out = tmp_path_factory.mktemp("vae") / "run"
    completed = run_cli("profile", FIXTURES / "outcome_vae.py", "--steps", "20", "--check-steps", "40", "--out", out)
    assert completed.returncode == 0, completed.stderr
    return out, completed.stdout, json.loads((out / "summary.json").read_text())


def test_progress_is_null_where_the_relative_drop_means_nothing(profiled):
    out, stdout, summary = profiled
    measured = summary["in_force"]["progress"]
    assert abs(measured["kl"]) > 10, "KL starts near 0: its relative drop is past 1000%"
    assert summary["progress"]["kl"] is None and summary["per_term"]["kl"]["progress"] is None
    assert summary["progress"]["reconstruction"] == pytest.approx(measured["reconstruction"])
    assert 0 < summary["progress"]["reconstruction"] < 1
    assert "from ~0" in stdout
    rebuilt = run_cli("report", out)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert json.loads((out / "summary.json").read_text())["progress"]["kl"] is None
