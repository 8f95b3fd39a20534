"""`lossdiag profile` on real model files, in-process through click's test runner: acceptance cases, exit codes,
outputs."""
import json

import pytest

from cli_helpers import invoke, run_cli, run_json


def test_two_outputs_names_regression_dominant_and_its_suggestion_balances(examples, tmp_path):
    code, summary = run_json("profile", examples / "two_outputs.py", "--no-checks", "--out", tmp_path / "a")
    assert code == 0
    assert summary["dominant_term"] == "regression"
    assert summary["suggestion_kind"] == "balance"
    alpha = summary["suggested_alpha"]
    assert 0 < alpha < 1 and alpha == pytest.approx(summary["suggested_weights"]["classification"])
    assert any(f["code"] == "dominant-term" and f["terms"] == ["regression"] for f in summary["findings"])

    weights = ",".join(f"{t}={w!r}" for t, w in summary["suggested_weights"].items())
    code, again = run_json("profile", examples / "two_outputs.py", "--no-checks", "--weights", weights,
                           "--out", tmp_path / "b")
    assert again["weights"] == pytest.approx(summary["suggested_weights"])
    assert again["dominant_term"] is None
    assert all(0.25 <= share <= 0.75 for share in again["dominance"].values())
    assert not [f for f in again["findings"] if f["code"] == "dominant-term"]


def test_terminal_summary_reads_top_down_with_a_line_to_paste(examples, tmp_path):
    completed = invoke("profile", examples / "two_outputs.py", "--no-checks", "--out", tmp_path)
    text = completed.stdout
    assert completed.returncode == 0, completed.stderr
    verdict = text.index("dominates the shared parameters")
    table = text.index("loss first -> last")
    finding = text.index("dominant-term")
    paste = text.index("loss_total = ")
    assert verdict < table < finding < paste
    assert "(threshold 0.8)" in text
    summary = json.loads((tmp_path / "summary.json").read_text())
    weight = summary["recommended_weights"]["classification"]
    assert f"{weight:.3g} * classification + " in text
    assert "alpha * classification + (1 - alpha) * regression" in text


def test_healthy_three_terms_exit_zero_without_warning(fixtures, tmp_path):
    code, summary = run_json("profile", fixtures / "healthy_three.py", "--out", tmp_path)
    assert code == 0
    assert [f for f in summary["findings"] if f["severity"] in ("warning", "error")] == []
    assert summary["dominant_term"] is None and summary["suggestion_kind"] == "balance"
    assert summary["suggested_alpha"] is None and len(summary["suggested_weights"]) == 3


def test_opposed_terms_are_a_trade_off_not_a_number(fixtures, tmp_path):
    completed = invoke("profile", fixtures / "opposed.py", "--no-checks", "--out", tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    conflict = [f for f in summary["findings"] if f["code"] == "gradient-conflict"]
    assert conflict and conflict[0]["terms"] == ["toward_y", "toward_minus_y"]
    assert summary["conflict"][0]["cosine_median"] < -0.5
    assert summary["suggestion_kind"] == "trade-off"
    assert summary["recommendation"] == "trade-off"
    assert summary["recommended_weights"] == summary["weights"]
    assert "toward_y" in summary["opposed"], "it rises above its start while the other term trains"
    assert "no weight balances opposed terms" in completed.stdout and "lossdiag sweep" in completed.stdout


def test_strict_turns_a_warning_into_exit_one(examples, tmp_path):
    assert invoke("profile", examples / "two_outputs.py", "--no-checks", "--steps", "20", "--strict",
                  "--out", tmp_path).returncode == 1


@pytest.mark.parametrize("name, expected", [
    ("broken_no_losses.py", "defines no 'losses'"),
    ("broken_nonscalar.py", "term 'per_sample' must be a scalar tensor, got shape (4,)"),
    ("broken_import.py", "raised RuntimeError: dataset folder /data/missing not found while being imported"),
    ("broken_empty_batches.py", "batches() yielded nothing"),
    ("broken_renamed_terms.py", "term names changed between batches"),
    ("broken_losses_raise.py", "losses(model, batch) at step 0 raised RuntimeError"),
    ("does_not_exist.py", "no such model file"),
])
def test_broken_model_files_exit_two_with_one_plain_line(fixtures, tmp_path, name, expected):
    completed = invoke("profile", fixtures / name, "--out", tmp_path / "out")
    assert completed.returncode == 2
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in completed.stderr
    assert name in lines[0] and expected in lines[0]
    assert completed.stdout == ""
    assert not (tmp_path / "out" / "summary.json").exists()


def test_debug_shows_the_traceback(fixtures, tmp_path):
    completed = invoke("profile", fixtures / "broken_import.py", "--debug", "--out", tmp_path)
    assert completed.returncode != 0 and "Traceback" in completed.stderr


def test_outputs_are_valid_json_with_the_contract_keys(fixtures, tmp_path):
    invoke("profile", fixtures / "healthy_three.py", "--no-checks", "--steps", "15", "--every", "2",
           "--out", tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    for key in ("lossdiag_version", "terms", "weights", "steps", "shared_parameters", "per_term", "dominance",
                "dominance_ratio", "dominant_term", "conflict", "suggested_weights", "suggestion_kind",
                "suggested_alpha", "findings", "checks", "verdict"):
        assert key in summary
    assert summary["steps"] == 15 and summary["recorded_steps"] == 8
    for row in summary["per_term"].values():
        assert {"loss_first", "loss_last", "grad_norm", "weighted_grad_norm", "share"} <= set(row)
    lines = (tmp_path / "records.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert all(isinstance(r["step"], int) for r in records)
    assert sum(1 for r in records if r["kind"] == "step") == 15


def test_version():
    completed = run_cli("--version")
    assert completed.returncode == 0 and "lossdiag" in completed.stdout


@pytest.mark.parametrize("args, expected", [
    (["profile"], "Missing argument 'MODEL_PY'"),
    (["profile", "model.py", "--steps", "ten"], "'ten' is not a valid integer"),
    (["profile", "model.py", "--colour"], "--colour"),
    (["sweeep"], "No such command 'sweeep'"),
])
def test_command_line_mistakes_are_one_line_and_exit_two(args, expected):
    completed = invoke(*args)
    assert completed.returncode == 2
    assert completed.stderr.count("\n") == 1 and expected in completed.stderr
    assert completed.stderr.startswith("lossdiag: error: ")


def test_an_output_folder_that_cannot_be_written_is_a_usage_error(examples, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    completed = invoke("profile", examples / "two_outputs.py", "--steps", "3", "--out", blocker / "sub")
    assert completed.returncode == 2
    assert completed.stderr.count("\n") == 1 and "cannot write the outputs" in completed.stderr


def test_a_model_file_with_dataclasses_and_an_expanded_gradient_profiles(fixtures, tmp_path):
    code, summary = run_json("profile", fixtures / "uncertainty_weighting.py", "--no-checks", "--steps", "12",
                             "--out", tmp_path)
    assert code in (0, 1)
    assert "log_vars" in summary["shared_parameters"]["names"]
    assert summary["weights"] == {"reg": 0.5, "fit_a": 1.0, "fit_b": 1.0}
