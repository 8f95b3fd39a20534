"""The outcome yardstick in a real profile: held-out validation_batches, main terms, the summary keys of CONTRACT
section 4 (outcome, opposed, main), a term that needs the others, and bad input for the new model-file names."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import lossdiag
from cli_helpers import invoke
from lossdiag.checks.single_term import check_findings
from lossdiag.config import Config
from lossdiag.analyse.run import parse
from paths import FIXTURES

QUICK = ("--steps", "20", "--check-steps", "20")
HELD_OUT = '''

def validation_batches():
    g = torch.Generator().manual_seed(7)
    direction = torch.randn(8, generator=torch.Generator().manual_seed(0))
    for _ in range(5):
        x = torch.randn(32, 8, generator=g)
        y = x @ direction
        yield x, 3.0 * y, (y > 0).float()
'''


def model_with(tmp_path: Path, extra: str, name: str = "model.py") -> Path:
    path = tmp_path / name
    path.write_text((FIXTURES / "advice_aux_by_design.py").read_text() + extra)
    return path


def test_validation_batches_are_the_evaluation_batches_of_every_run(tmp_path):
    model = model_with(tmp_path, HELD_OUT + "\nmain = ['main']\n")
    result = lossdiag.profile(str(model), steps=20, check_steps=20, progress=False, out=str(tmp_path / "out"))
    summary = result.summary
    assert summary["outcome"]["on"] == "validation" and summary["main"] == ["main"]
    runs = [r for r in result.records if r.get("kind") in ("check", "progress", "verify")]
    assert runs and all(r["on"] == "validation" and len(r["end_batches"]) == 5 for r in runs)
    assert all(c["probe_batches"] == 5 for c in summary["checks"])
    in_force = next(r for r in result.records if r.get("kind") == "progress")
    assert summary["outcome"]["in_force"] == pytest.approx(in_force["after"])
    for candidate in summary["outcome"]["candidates"]:
        assert set(candidate) == {"weights", "end", "change", "noise", "verdict"}
        assert not (candidate["verdict"].startswith("qualifies") and candidate["change"]["main"] > 0
                    and candidate["change"]["main"] > Config().check_noise_z * candidate["noise"]["main"])


def test_main_from_the_command_line_and_a_main_term_that_does_not_exist(tmp_path):
    model = model_with(tmp_path, "")
    completed = invoke("profile", model, *QUICK, "--main", "aux", "--no-verify", "--out", tmp_path / "a")
    assert completed.returncode in (0, 1), completed.stderr
    assert json.loads((tmp_path / "a" / "summary.json").read_text())["main"] == ["aux"]
    unknown = invoke("profile", model, *QUICK, "--main", "mian", "--out", tmp_path / "b")
    assert unknown.returncode == 2 and "'mian'" in unknown.stderr and "main, aux" in unknown.stderr
    assert "Traceback" not in unknown.stderr and not (tmp_path / "b" / "summary.json").exists()


@pytest.mark.parametrize("extra, message", [("\nvalidation_batches = [1, 2]\n", "'validation_batches' must be a function"),
                                            ("\ndef validation_batches():\n    return []\n", "validation_batches() yielded nothing"),
                                            ("\nmain = 'main'\nmain = 3\n", "'main' must be a list of term names")])
def test_bad_validation_batches_or_main_in_the_model_file_is_a_usage_error(tmp_path, extra, message):
    completed = invoke("profile", model_with(tmp_path, extra), *QUICK, "--out", tmp_path / "o")
    assert completed.returncode == 2 and message in completed.stderr and "Traceback" not in completed.stderr


def test_a_term_that_goes_down_only_combined_is_information_not_an_error():
    """check_unlearnable's labels are noise: trained alone 'classification' does not go down (an error); when the
    profile measured it going down combined it needs the others, so the same check record is information."""
    result = lossdiag.profile(str(FIXTURES / "check_unlearnable.py"), steps=20, progress=False)
    run = parse(result.records)
    failed = [f for f in check_findings(run, result.diagnosis.config) if f.code == "not-decreasing"]
    assert [f.severity for f in failed] == ["error"]
    assert result.summary["situations"]["classification"]["name"] == "stalled"
    needed = check_findings(run, result.diagnosis.config, ["classification"])
    assert [(f.code, f.severity) for f in needed] == [("not-decreasing", "info")]
    assert "it needs the other terms" in needed[0].message
