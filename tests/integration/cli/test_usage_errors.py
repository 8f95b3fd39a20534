"""Bad input through the command line (in-process; --debug in a real process): one line naming the problem, exit 2,
never a traceback or exit 3."""
from __future__ import annotations

import json

import pytest
import torch

import lossdiag
from cli_helpers import invoke, model_file, run_cli
from lossdiag.config import format_pairs, parse_weights

def assert_usage_error(completed, *expected: str) -> None:
    """Exit 2, one line on stderr naming the problem, no traceback."""
    assert completed.returncode == 2, (completed.returncode, completed.stderr[-2000:])
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in completed.stderr, completed.stderr[-2000:]
    for text in expected:
        assert text in lines[0], lines[0]


YAML_CASES = {
    "alias-bomb": ("a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
                   "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
                   "e: [*d, *d, *d, *d, *d, *d, *d, *d, *d]\n").encode(),
    "deep": ("steps: " + "[" * 5000 + "]" * 5000 + "\n").encode(),
    "utf-16": "steps: 5\n".encode("utf-16"),
    "latin-1": "steps: 5  # café\n".encode("latin-1"),
    "binary": bytes(range(256)) * 8,
}
YAML_MESSAGES = {"alias-bomb": "anchors and aliases", "deep": "nests deeper than", "utf-16": "must be UTF-8",
                 "latin-1": "must be UTF-8", "binary": "must be UTF-8"}


@pytest.mark.parametrize("case", sorted(YAML_CASES))
def test_a_hostile_or_undecodable_config_is_one_line(tmp_path, case):
    model = model_file(tmp_path)
    (tmp_path / "lossdiag.yaml").write_bytes(YAML_CASES[case])
    completed = invoke("profile", model, "--out", tmp_path / "out")
    assert_usage_error(completed, "lossdiag.yaml", YAML_MESSAGES[case])
    assert not (tmp_path / "out").exists()


OPTION_CASES = {
    "device-nonsense": (["--device", "nonsense"], "'device' 'nonsense' is not a device torch knows"),
    "device-cuda-99": (["--device", "cuda:99"], "'device' 'cuda:99' is not available"),
    "seed-2-32": (["--seed", str(2 ** 32)], "'seed' must be below 2**32"),
    "weight-1e308": (["--weights", "a=1e308"], "weight of 'a' must be at most 1e+30"),
    "weight-text": (["--weights", "a=heavy"], "weight of 'a' must be a number"),
}


@pytest.mark.parametrize("case", sorted(OPTION_CASES))
def test_a_bad_option_value_is_one_line(tmp_path, case):
    options, expected = OPTION_CASES[case]
    completed = invoke("profile", model_file(tmp_path), "--steps", "4", "--no-checks", *options,
                       "--out", tmp_path / "out")
    assert_usage_error(completed, expected)


def test_cuda_without_cuda_is_a_usage_error(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    completed = invoke("profile", model_file(tmp_path), "--device", "cuda", "--out", tmp_path / "out")
    assert_usage_error(completed, "'device' 'cuda' is not available")


def test_debug_keeps_the_exit_code_and_adds_the_traceback(tmp_path):
    completed = run_cli("profile", model_file(tmp_path), "--seed", str(2 ** 40), "--debug", "--out", tmp_path / "o")
    assert completed.returncode == 2 and "Traceback" in completed.stderr
    assert completed.stderr.strip().splitlines()[-1].startswith("lossdiag: error: 'seed' must be below 2**32")


MODEL_CASES = {
    "sys-exit": ("def before_call(call):\n    sys.exit(0)\n", "losses(model, batch) at step 0 called sys.exit(0)"),
    "raises-at-step-30": ("def before_call(call):\n    if call == 32:  # step 30: call 1 counts the terms\n"
                          "        raise KeyError('label')\n",
                          "losses(model, batch) at step 30 raised KeyError: 'label'"),
    "no-parameters": ("def build_model():\n    return nn.Tanh()\n",
                      "build_model() returned a Tanh with no trainable parameter"),
}


@pytest.mark.parametrize("case", sorted(MODEL_CASES))
def test_a_model_file_fault_names_what_and_when(tmp_path, case):
    extra, expected = MODEL_CASES[case]
    completed = invoke("profile", model_file(tmp_path, extra), "--steps", "40", "--no-checks",
                       "--out", tmp_path / "out")
    assert_usage_error(completed, expected)


def test_a_one_term_profile_says_there_is_nothing_to_balance_and_runs_only_the_checks(tmp_path):
    extra = "_losses = losses\ndef losses(model, x):\n    return {'only': _losses(model, x)['a']}\n"
    completed = invoke("profile", model_file(tmp_path, extra), "--check-steps", "12", "--out", tmp_path / "out")
    assert completed.returncode == 0, completed.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["purpose"] == "check" and summary["steps"] == 20 and len(summary["checks"]) == 1
    assert summary["verdict"].startswith("one term: there is nothing to balance")
    assert "one term: there is nothing to balance" in completed.stdout


@pytest.mark.parametrize("option", [["--steps", "5"], ["--every", "2"], ["--refine", "1"], ["--no-checks"]])
def test_check_rejects_the_options_it_does_not_use(tmp_path, option):
    completed = invoke("check", model_file(tmp_path), *option, "--out", tmp_path / "out")
    assert_usage_error(completed, f"{option[0]} does not apply to `lossdiag check`")


def test_the_check_it_line_carries_names_with_commas_and_equals_back_to_weights(tmp_path):
    names = 'NAMES = ["mse, scaled", "kl=beta"]\n'
    model = model_file(tmp_path, names)
    target = '"mse, scaled"=0.99'   # far off the shares, so there is a candidate with a line to check
    completed = invoke("profile", model, "--steps", "6", "--no-checks", "--no-verify", "--target", target,
                       "--out", tmp_path / "out")
    assert completed.returncode in (0, 1), completed.stderr
    line = next(line for line in completed.stdout.splitlines() if "check it:" in line)
    import shlex
    argv = shlex.split(line.split("check it:", 1)[1])
    weights = argv[argv.index("--weights") + 1]
    recommended = json.loads((tmp_path / "out" / "summary.json").read_text())["candidate_weights"]
    assert parse_weights(weights).keys() == recommended.keys() == {"mse, scaled", "kl=beta"}
    assert parse_weights(argv[argv.index("--target") + 1]) == {"mse, scaled": 0.99}
    rerun = invoke("profile", model, "--steps", "6", "--no-checks", "--weights", weights, "--out", tmp_path / "again")
    assert rerun.returncode in (0, 1), rerun.stderr
    in_force = json.loads((tmp_path / "again" / "summary.json").read_text())["weights"]
    assert in_force == pytest.approx(recommended, rel=5e-3)


def test_quoted_names_round_trip():
    weights = {"a,b": "0.5", "x=y": "1", 'q"': "2", "esc\x1b[31m": "3", " pad": "4", "plain": "5"}
    assert parse_weights(format_pairs(weights)) == {k: float(v) for k, v in weights.items()}
    assert "\x1b" not in format_pairs(weights)


@pytest.mark.parametrize("weight, expected", [(float("nan"), "is nan"), (float("inf"), "is inf"),
                                              ("0.5", "must be a number or a one-element tensor")])
def test_a_monitor_refuses_a_bad_weight_on_the_first_call(tmp_path, weight, expected):
    model = torch.nn.Linear(3, 2)
    monitor = lossdiag.Monitor(model, out=tmp_path / "run", every=1)
    out = model(torch.randn(4, 3))
    with pytest.raises(lossdiag.SpecError, match=expected):
        monitor.combine({"a": out[:, 0].mean(), "b": out[:, 1].pow(2).mean()}, weights={"a": weight})
    assert monitor.close() is None
