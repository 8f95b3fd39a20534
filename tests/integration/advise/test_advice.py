"""Advice judged by measured outcome: keep, reweight (verified from the same start) or trade-off, on fixture
models of each pattern and on the two_outputs example, through the command line."""
from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from cli_helpers import invoke
from lossdiag.advise.recommend import resolve_targets
from lossdiag.config import Config
from lossdiag.advise.diagnose import diagnose
from lossdiag.record.stream import read_records
from lossdiag.train.spec import load_model_file
from lossdiag.report.summary import build_summary
from paths import EXAMPLES, FIXTURES

CONFIG = Config()


def profile(tmp_path: Path, model: Path, *options: str, out: Path | None = None) -> tuple[int, dict, str]:
    """Run `lossdiag profile` as a user would; return the exit code, summary.json and the printed text."""
    out = out or tmp_path / f"out{len(list(tmp_path.iterdir()))}"
    completed = invoke("profile", model, "--out", out, *options)
    assert completed.returncode in (0, 1), completed.stderr
    return completed.returncode, json.loads((out / "summary.json").read_text()), completed.stdout


def starved(summary: dict) -> set[str]:
    return {f["terms"][0] for f in summary["findings"] if f["code"] == "starved"}


@pytest.fixture(scope="module")
def two_outputs(tmp_path_factory):
    return profile(tmp_path_factory.mktemp("two"), EXAMPLES / "two_outputs.py", "--steps", "100")


@pytest.fixture(scope="module")
def cnn(tmp_path_factory):
    return profile(tmp_path_factory.mktemp("cnn"), FIXTURES / "advice_misscaled_cnn.py", "--steps", "100")


def chosen(summary: dict) -> dict:
    """The outcome of the recommended candidate (CONTRACT section 4 `outcome`)."""
    outcome = summary["outcome"]
    return outcome["candidates"][outcome["chosen"]]


def test_two_outputs_is_reweighted_and_the_verified_candidate_rescues_classification(two_outputs):
    code, summary, text = two_outputs
    assert starved(summary) == {"classification"}
    assert summary["recommendation"] == "reweight" and summary["outcome"]["on"] == "validation"
    picked = chosen(summary)
    assert picked["weights"] == summary["recommended_weights"] == summary["verification"]["weights"]
    assert picked["change"]["classification"] <= -CONFIG.min_gain
    assert picked["change"]["classification"] < -CONFIG.check_noise_z * picked["noise"]["classification"]
    assert picked["change"]["regression"] <= CONFIG.max_cost + CONFIG.check_noise_z * picked["noise"]["regression"]
    in_force = summary["outcome"]["in_force"]["classification"]
    assert picked["end"]["classification"] == pytest.approx(in_force * (1 + picked["change"]["classification"]))
    assert "classification" not in summary["verification"]["starved"]
    assert sum(summary["recommended_weights"].values()) == pytest.approx(sum(summary["weights"].values()))
    assert "bound 10%" in summary["recommendation_reason"] and summary["max_cost"] == CONFIG.max_cost
    assert summary["opposed"] == [] and summary["main"] == []
    for old in ("suggested_weights", "suggestion_kind", "suggested_alpha"):
        assert old in summary


def test_the_output_shows_the_candidates_both_weightings_and_the_line_to_paste(two_outputs):
    _, summary, text = two_outputs
    assert "recommendation: reweight" in text
    assert "the rule: reweight only for a candidate" in text
    assert "rises by more than 10% of its end under the weights in force (or of 0.1 x its start loss" in text
    header = next(line for line in text.splitlines() if line.startswith("term") and "recommended" in line
                  and "alone-end" in line)
    assert header.split() == ["term", "in-force", "end-share", "end-loss", "recommended", "end-share", "end-loss",
                              "change", "alone-end"]
    assert "median over the recorded steps" in text and "not the recorded window's median" in text
    assert len([line for line in text.splitlines() if "recommended: qualifies" in line]) == 1
    paste = next(line.strip() for line in text.splitlines() if line.strip().startswith("loss_total ="))
    numbers = re.findall(r"([0-9.e+-]+) \* ", paste)
    assert len(numbers) == 2
    for value in numbers:
        mantissa = value.split("e")[0].replace(".", "").replace("-", "").lstrip("0")
        assert len(mantissa) <= 3
    check = next(line.strip() for line in text.splitlines() if line.strip().startswith("check it:"))
    words = shlex.split(check.removeprefix("check it: "))
    for option, value in (("--steps", "100"), ("--every", "1"), ("--check-steps", "100"), ("--seed", "0")):
        assert words[words.index(option) + 1] == value
    weights = dict(pair.split("=") for pair in words[words.index("--weights") + 1].split(","))
    assert {t: float(w) for t, w in weights.items()} == pytest.approx(summary["recommended_weights"], rel=5e-3)
    assert all(len(summary["recommended_spread"][t]) == 2 for t in summary["terms"])


def test_aux_head_by_design_keeps_the_weights_after_trying_candidates(tmp_path):
    code, summary, text = profile(tmp_path, FIXTURES / "advice_aux_by_design.py", "--steps", "60")
    assert code == 0 and summary["status"] == "ok"
    assert summary["dominant_term"] == "main"
    assert {f["severity"] for f in summary["findings"]} <= {"info"}
    assert summary["recommendation"] == "keep"
    assert summary["recommended_weights"] == summary["weights"] and summary["verification"] is None
    assert summary["outcome"]["candidates"], "dominance by design is concluded from verified candidates"
    assert not any(c["verdict"].startswith("qualifies") for c in summary["outcome"]["candidates"])
    assert "keep" in summary["verdict"] and "by design" in summary["verdict"]
    assert "loss_total" not in text


@pytest.mark.slow
def test_the_recommended_weights_rescue_the_term_a_misscaled_one_starves(tmp_path, cnn):
    _, summary, _ = cnn
    assert "main" in starved(summary) and summary["recommendation"] == "reweight"
    assert chosen(summary)["change"]["main"] <= -CONFIG.min_gain
    weights = summary["recommended_weights"]
    pairs = ",".join(f"{t}={w!r}" for t, w in weights.items())
    _, again, _ = profile(tmp_path, FIXTURES / "advice_misscaled_cnn.py", "--steps", "100", "--weights", pairs)
    assert again["weights"] == pytest.approx(weights)
    assert starved(again) == set()
    assert again["progress"]["main"] >= 3 * summary["progress"]["main"]


def test_a_candidate_that_costs_a_term_beyond_the_bound_is_never_printed(tmp_path):
    _, summary, text = profile(tmp_path, FIXTURES / "opposed.py", "--no-checks")
    assert summary["recommendation"] == "trade-off" and "loss_total" not in text
    costly = [c for c in summary["outcome"]["candidates"] if "(bound 10%)" in c["verdict"]]
    assert costly, "the fixture no longer has a candidate that costs a term beyond the bound"
    assert all(c["weights"] != summary["recommended_weights"] for c in costly)
    assert all(max(v for v in c["change"].values() if v is not None) > CONFIG.max_cost for c in costly)


@pytest.mark.slow
def test_noisy_batches_pass_every_check_and_a_flat_term_is_not_diverging(tmp_path):
    _, noisy, _ = profile(tmp_path, FIXTURES / "advice_noisy_batches.py", "--steps", "60")
    assert [c["status"] for c in noisy["checks"]] == ["pass", "pass"]
    assert not [f for f in noisy["findings"] if f["severity"] != "info"]
    _, flat, _ = profile(tmp_path, FIXTURES / "advice_noisy_flat.py", "--steps", "60")
    row = next(c for c in flat["checks"] if c["term"] == "flat")
    assert row["code"] != "diverging"
    assert abs(row["relative_drop"]) < CONFIG.check_min_drop
    assert [c["status"] for c in flat["checks"] if c["term"] != "flat"] == ["pass", "pass"]


def test_no_verify_prints_no_unverified_weights_as_advice(tmp_path):
    _, summary, text = profile(tmp_path, EXAMPLES / "two_outputs.py", "--steps", "40", "--check-steps", "40",
                               "--no-verify")
    assert summary["recommendation"] == "keep" and summary["verification"] is None
    assert summary["candidate_weights"] is not None and summary["candidate_weights"] != summary["weights"]
    assert summary["verification_rounds"] == [] and "--no-verify" in summary["recommendation_reason"]
    assert "loss_total" not in text and "candidate (not verified)" in text


def test_weights_override_only_the_terms_named(tmp_path):
    _, summary, _ = profile(tmp_path, FIXTURES / "advice_misscaled_cnn.py", "--steps", "20", "--check-steps", "20",
                            "--weights", "recon=0.001", "--no-verify")
    assert summary["weights"] == {"main": 1.0, "aux": 0.3, "recon": 0.001}


def test_target_shares_from_the_model_file_or_the_command_line(tmp_path):
    model = tmp_path / "targeted.py"
    source = (FIXTURES / "advice_aux_by_design.py").read_text()
    model.write_text(source + "\ntarget_shares = {'main': 0.5}\n")
    spec = load_model_file(model)
    assert spec.target_shares == {"main": 0.5}
    _, summary, _ = profile(tmp_path, model, "--steps", "20", "--check-steps", "20", "--no-verify")
    assert summary["target_shares"] == {"main": 0.5, "aux": 0.5}
    candidate = summary["candidate_weights"]
    assert candidate["aux"] / candidate["main"] > summary["weights"]["aux"] / summary["weights"]["main"]
    _, given, _ = profile(tmp_path, model, "--steps", "20", "--check-steps", "20", "--no-verify",
                          "--target", "main=0.99")
    assert given["target_shares"] == pytest.approx({"main": 0.99, "aux": 0.01})


def test_target_shares_are_normalised_and_the_missing_ones_split_what_is_left():
    assert resolve_targets(["a", "b", "c"], None) == pytest.approx({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3})
    assert resolve_targets(["a", "b", "c"], {"a": 0.5}) == pytest.approx({"a": 0.5, "b": 0.25, "c": 0.25})
    assert resolve_targets(["a", "b"], {"a": 3.0, "b": 1.0}) == pytest.approx({"a": 0.75, "b": 0.25})


def test_a_bad_target_is_a_usage_error(tmp_path):
    completed = invoke("profile", FIXTURES / "advice_aux_by_design.py", "--out", tmp_path / "o",
                       "--target", "main=-1")
    assert completed.returncode == 2 and "target_shares" in completed.stderr
    assert "Traceback" not in completed.stderr


def test_the_records_alone_rebuild_the_same_recommendation(two_outputs, tmp_path):
    _, summary, _ = two_outputs
    out = tmp_path / "again"
    profile(tmp_path, EXAMPLES / "two_outputs.py", "--steps", "100", out=out)
    records, torn = read_records(out / "records.jsonl")
    rebuilt = build_summary(diagnose(records, torn))
    for key in ("recommendation", "recommended_weights", "verification", "progress", "target_shares", "outcome",
                "opposed", "main", "situations"):
        assert rebuilt[key] == json.loads(json.dumps(summary[key])) == json.loads((out / "summary.json").read_text())[key]
