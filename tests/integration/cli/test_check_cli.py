"""`lossdiag check` (and the checks inside `lossdiag profile`) through the command line, in-process."""
from __future__ import annotations

import json

import pytest

from cli_helpers import invoke, run_json
from lossdiag.config import Config
from paths import FIXTURES


CHECK_EXPECTED = {
    "check_detached.py": (1, {("no-grad-path", "classification")}),
    "check_zero.py": (1, {("zero-grad", "regression")}),
    "check_unlearnable.py": (1, {("not-decreasing", "classification")}),
    "check_nan.py": (1, {("non-finite", "regression")}),
    "check_diverging.py": (1, {("diverging", "regression")}),
    "check_aux_detached.py": (0, {("no-shared-params", "aux")}),
    "check_starved.py": (0, set()),
    "check_nan_gradient.py": (1, {("non-finite", "margin")}),
}


@pytest.mark.parametrize("name", sorted(CHECK_EXPECTED))
def test_check_gives_each_fixture_its_finding_and_exit_code(name, tmp_path):
    code, out, _ = invoke("check", FIXTURES / name, "--json", "--out", tmp_path)
    summary = json.loads(out)
    expected_code, expected = CHECK_EXPECTED[name]
    assert code == expected_code
    assert {(f["code"], t) for f in summary["findings"] for t in f["terms"]} == expected
    assert summary["purpose"] == "check"
    assert {p.name for p in tmp_path.iterdir()} >= {"summary.json", "records.jsonl"}


def test_check_on_the_healthy_model_exits_0_and_prints_each_term_with_the_rule(tmp_path):
    completed = invoke("check", FIXTURES / "check_healthy.py", "--out", tmp_path)
    assert completed.returncode == 0, completed.stderr
    text = completed.stdout
    config = Config()
    for term in ("classification", "regression", "flag"):
        assert any(line.startswith(term) and " pass " in line for line in text.splitlines())
    assert "\nOK: " in text and "\nfindings\n" not in text
    assert f"a drop of {config.check_min_drop:.1%} ruled out" in text and f"{config.check_noise_z:g} noise" in text
    assert f"{config.check_max_rise:.1%}" in text


def test_check_names_the_skipped_term_and_what_to_do(tmp_path):
    code, out, _ = invoke("check", FIXTURES / "check_detached.py", "--out", tmp_path)
    assert code == 1
    assert "'classification' skipped: it reaches no trainable parameter" in out
    assert "what to do: the term is computed on detached tensors" in out


def test_check_with_a_broken_model_file_is_a_usage_error(tmp_path):
    model = tmp_path / "broken.py"
    model.write_text("def build_model():\n    pass\n")
    completed = invoke("check", model, "--out", tmp_path / "out")
    assert completed.returncode == 2
    assert "Traceback" not in completed.stderr and "batches" in completed.stderr


@pytest.mark.slow
def test_strict_turns_a_starved_warning_into_exit_1(tmp_path):
    assert invoke("profile", FIXTURES / "check_starved.py", "--out", tmp_path / "a")[0] == 0
    code, out, _ = invoke("profile", FIXTURES / "check_starved.py", "--strict", "--out", tmp_path / "b")
    assert code == 1 and "starved" in out


def test_profile_on_the_example_shows_both_progress_figures_by_the_rule(examples, tmp_path):
    code, summary = run_json("profile", examples / "two_outputs.py", "--out", tmp_path / "json")
    config = Config()
    checks = {c["term"]: c for c in summary["checks"]}
    assert [c["status"] for c in checks.values()] == ["pass", "pass"]
    row = checks["classification"]
    seen = summary["situations"]["classification"]
    rule = seen["name"] == "starved"
    assert rule == (seen["start"] - seen["combined"] <= config.starved_ratio * (seen["start"] - seen["alone"])
                    and seen["against_alone"] >= config.min_gain)
    starved = [f for f in summary["findings"] if f["code"] == "starved"]
    assert row["starved"] == rule and bool(starved) == rule
    assert [f["terms"] for f in starved] == ([["classification"]] if rule else [])

    text = invoke("profile", examples / "two_outputs.py", "--out", tmp_path / "text")[1]
    line = next(line for line in text.splitlines() if line.startswith("classification") and " pass " in line)
    assert f"{row['alone_relative_drop']:.1%}" in line and f"{row['combined_relative_drop']:.1%}" in line
