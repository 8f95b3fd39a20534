"""The inputs issue 16 found still mishandled: each is one line on stderr and exit 2 (Ctrl-C: exit 130), with
nothing half-written and earlier results intact. In-process through click's test runner where it can be."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import warnings

import pytest
import torch

import lossdiag
from cli_helpers import ENV, invoke, model_file
from lossdiag.config import MAX_POINTS

QUICK = ["--steps", "4", "--no-checks", "--no-verify"]


def assert_one_line(code: int, stderr: str, *expected: str, exit_code: int = 2) -> None:
    assert code == exit_code, (code, stderr[-2000:])
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr[-2000:]
    for text in expected:
        assert text in lines[0], lines[0]


def listing(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


MODEL_CASES = {
    "lbfgs": ("def make_optimizer(params):\n    return torch.optim.LBFGS(params)\n",
              "returned LBFGS, whose step() needs a closure"),
    "optimizer-of-another-model": ("def make_optimizer(params):\n"
                                   "    return torch.optim.SGD(nn.Linear(3, 2).parameters(), lr=0.1)\n",
                                   "returned SGD holding none of the model's trainable parameters"),
}


@pytest.mark.parametrize("case", sorted(MODEL_CASES))
def test_an_optimizer_lossdiag_cannot_step_is_refused_in_one_line(tmp_path, case):
    extra, expected = MODEL_CASES[case]
    code, _, stderr = invoke("profile", model_file(tmp_path, extra), *QUICK, "--out", tmp_path / "out")
    assert_one_line(code, stderr, "make_optimizer(params)", expected)
    assert not (tmp_path / "out").exists()


OPTION_CASES = {
    "device-meta": (["--device", "meta"], "'device' 'meta' holds shapes but no values"),
    "out-empty": (["--out", ""], "'out' must name a folder, got ''"),
    "target-unknown-term": (["--target", "a=0.5,c=0.5"], "error: --target: target_shares name unknown term 'c'"),
    "all-weights-zero": (["--weights", "a=0,b=0"], "every weight is 0, so no term would be trained"),
    "5000-digit-seed": (["--seed", "9" * 5000], "'--seed': a number of 5,000 digits is larger than any option takes"),
    "5000-letter-seed": (["--seed", "x" * 5000], "'--seed': 'xxxxxxxxxxxxxxxxx…", "' is not a valid integer"),
}


@pytest.mark.parametrize("case", sorted(OPTION_CASES))
def test_a_bad_option_is_one_line_and_writes_nothing(tmp_path, monkeypatch, case):
    options, *expected = OPTION_CASES[case]
    monkeypatch.chdir(tmp_path)
    model = model_file(tmp_path)
    out = [] if "--out" in options else ["--out", tmp_path / "out"]
    code, _, stderr = invoke("profile", model, *QUICK, *options, *out)
    assert_one_line(code, stderr, *expected)
    assert len(stderr) < 300, stderr[:400]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.py"]


def test_a_refused_rerun_leaves_the_earlier_outputs_as_they_were(tmp_path):
    model = model_file(tmp_path)
    code, _, stderr = invoke("profile", model, *QUICK, "--out", tmp_path / "out")
    assert code == 0, stderr
    before = listing(tmp_path / "out")
    code, _, stderr = invoke("profile", model, *QUICK, "--weights", "a=0,b=0", "--out", tmp_path / "out")
    assert_one_line(code, stderr, "every weight is 0")
    assert listing(tmp_path / "out") == before and [p.name for p in (tmp_path / "out").iterdir() if p.is_dir()] == []


@pytest.mark.parametrize("command", ["report", "profile", "sweep"])
def test_an_empty_out_is_refused_by_every_command_alike(tmp_path, command):
    model = model_file(tmp_path)
    code, _, stderr = invoke("profile", model, *QUICK, "--out", tmp_path / "run")
    assert code == 0, stderr
    before = listing(tmp_path / "run")
    target = tmp_path / "run" if command == "report" else model
    code, _, stderr = invoke(command, target, "--out", "")
    assert_one_line(code, stderr, "'out' must name a folder, got ''")
    assert listing(tmp_path / "run") == before


def test_sweep_refuses_too_many_points_before_any_work(tmp_path):
    code, _, stderr = invoke("sweep", model_file(tmp_path), "--points", "100000000", "--out", tmp_path / "out")
    assert_one_line(code, stderr, f"'points' must be at most {MAX_POINTS}", "got 100000000")
    assert not (tmp_path / "out").exists()


YAML_CASES = {
    "5000-digit-seed": ("steps: 4\nseed: " + "9" * 5000 + "\n", "line 2: a number of 5,000 digits"),
    "key-twice": ("steps: 4\nevery: 1\nsteps: 8\n", "'steps' is given twice (first at line 1)"),
    "nested-key-twice": ("weights: {a: 1, b: 2, a: 3}\n", "'a' is given twice"),
}


@pytest.mark.parametrize("case", sorted(YAML_CASES))
def test_a_config_lossdiag_cannot_read_faithfully_is_one_line(tmp_path, case):
    text, expected = YAML_CASES[case]
    (tmp_path / "lossdiag.yaml").write_text(text)
    code, _, stderr = invoke("profile", model_file(tmp_path), "--no-checks", "--out", tmp_path / "out")
    assert_one_line(code, stderr, "lossdiag.yaml", expected)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["profile", "sweep"])
@pytest.mark.parametrize("given_in", ["model file", "YAML"])
def test_target_shares_naming_an_unknown_term_are_refused_naming_where_they_were_given(tmp_path, command, given_in):
    """The profile and the sweep refuse the same targets the same way, blaming the file that holds them."""
    targets = "target_shares = {'a': 0.5, 'zzz': 0.5}\n"
    model = model_file(tmp_path, targets if given_in == "model file" else "")
    if given_in == "YAML":
        (tmp_path / "lossdiag.yaml").write_text("target_shares: {a: 0.5, zzz: 0.5}\n")
    source = model if given_in == "model file" else tmp_path / "lossdiag.yaml"
    options = QUICK if command == "profile" else ["--steps", "4", "--points", "2", "--sweep-steps", "2", "--jobs", "1"]
    code, _, stderr = invoke(command, model, *options, "--out", tmp_path / "out")
    assert_one_line(code, stderr, f"error: {source}: target_shares name unknown term 'zzz'")
    assert not (tmp_path / "out").exists()


def test_a_monitor_refuses_an_out_that_is_a_file_when_it_is_made(tmp_path):
    taken = tmp_path / "notes.txt"
    taken.write_text("mine")
    with pytest.raises(lossdiag.SpecError, match=r"out='.*notes.txt' is a file, not a folder"):
        lossdiag.Monitor(torch.nn.Linear(3, 2), out=taken)
    assert taken.read_text() == "mine"


def test_a_monitor_refuses_target_shares_naming_an_unknown_term(tmp_path):
    model = torch.nn.Linear(3, 2)
    monitor = lossdiag.Monitor(model, out=tmp_path / "run", target_shares={"a": 0.5, "typo": 0.5})
    out = model(torch.randn(4, 3))
    with pytest.raises(lossdiag.SpecError, match="target_shares name unknown term 'typo'"):
        monitor.combine({"a": out[:, 0].mean(), "b": out[:, 1].pow(2).mean()})
    assert monitor.close() is None and not (tmp_path / "run").exists()


def test_a_log_function_that_always_raises_is_warned_about_once_and_never_stops_training(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    calls = []

    def log(scalars, step):
        calls.append(step)
        raise ConnectionError("the logging server is down")

    steps = 400
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        monitor = lossdiag.Monitor(model, out=tmp_path / "run", every=1, log=log)
        for step in range(steps):
            out = model(torch.randn(16, 4))
            loss = monitor.combine({"a": out[:, 0].pow(2).mean(), "b": (out[:, 1] - 1).pow(2).mean()})
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if step % 100 == 0:
                monitor.summary()  # writes the settled steps, so log() is called during the loop
        summary = monitor.close()
    assert len(calls) == 1
    raised = [w for w in caught if "log(scalars, step) raised ConnectionError" in str(w.message)]
    assert len(raised) == 1 and "will not be called again" in str(raised[0].message)
    assert summary["steps"] == steps


def _sweep_folder(fixtures, folder):
    lossdiag.sweep(fixtures / "sweep_tradeoff.py", steps=6, sweep_steps=6, points=3, jobs=1, probe_batches=2,
                   out=str(folder), progress=False)
    return [json.loads(line) for line in (folder / "sweep_records.jsonl").read_text().splitlines()]


def test_report_on_crafted_sweep_records_escapes_them_and_drops_points_of_the_wrong_type(fixtures, tmp_path):
    folder = tmp_path / "sweep"
    records = _sweep_folder(fixtures, folder)
    records[0]["lossdiag_version"] = "0.1\x1b]0;owned\x07\x1b[2J"
    points = [r for r in records if r["kind"] == "point"]
    points[0]["alpha"] = "0.5"
    (folder / "sweep_records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    code, stdout, stderr = invoke("report", folder)
    assert code == 0, stderr
    assert "\x1b" not in stdout + stderr and "\x07" not in stdout + stderr
    assert "\\x1b]0;owned\\x07" in stdout
    written = json.loads((folder / "sweep.json").read_text())
    assert len(written["points"]) == len(points) - 1
    assert written["record_repairs"] == ["1 record with a field of the wrong type was dropped "
                                         "(the first: its 'alpha' has the wrong type)"]
    assert "damaged records: 1 record" in stdout
    assert "<strong>Damaged records:</strong> 1 record" in (folder / "sweep.html").read_text()
    assert "ended early" not in stdout and "ended early" not in (folder / "sweep.html").read_text()
    header = next(line for line in stdout.splitlines() if line.lstrip().startswith("point "))
    assert header.split()[-2:] == ["score", "marks"], header


def test_a_sweep_header_of_the_wrong_type_refuses_the_folder_in_one_line(fixtures, tmp_path):
    folder = tmp_path / "sweep"
    records = _sweep_folder(fixtures, folder)
    records[0]["terms"] = "classification"
    (folder / "sweep_records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    code, _, stderr = invoke("report", folder)
    assert_one_line(code, stderr, "not lossdiag sweep records", "its 'terms' has the wrong type")


def test_report_on_sweep_records_with_evaluation_batches_of_the_wrong_type_drops_them(fixtures, tmp_path):
    folder = tmp_path / "sweep"
    records = _sweep_folder(fixtures, folder)
    points = [r for r in records if r["kind"] == "point"]
    points[0]["end_batches"] = [{"classification": "x"}]
    next(r for r in records if r["kind"] == "alone")["end_batches"] = "x"
    (folder / "sweep_records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    code, stdout, stderr = invoke("report", folder)
    assert code == 0, stderr
    assert json.loads((folder / "sweep.json").read_text())["record_repairs"] == [
        "2 records with a field of the wrong type were dropped (the first: its 'end_batches' has the wrong type)"]
    records[0]["probe"]["start_batches"] = [[1.0]]
    (folder / "sweep_records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    code, _, stderr = invoke("report", folder)
    assert_one_line(code, stderr, "not lossdiag sweep records", "its 'probe' has the wrong type")


SLOW_START = "Path(__file__).with_name('started').touch()\ntime.sleep(60)\n"


def _loaded_torch(pid: int) -> bool:
    """Whether the process has mapped libtorch: it is inside `import torch`, which takes a second or more."""
    try:
        with open(f"/proc/{pid}/maps") as maps:
            return "libtorch" in maps.read()
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="watches /proc/PID/maps")
@pytest.mark.parametrize("when", ["importing torch", "running the model file"])
def test_ctrl_c_at_start_up_is_one_line_and_exit_130(tmp_path, when):
    """SIGINT while torch is half-imported, or while the model file runs: one line, exit 130, never a traceback."""
    model = model_file(tmp_path, SLOW_START)
    child = subprocess.Popen([sys.executable, "-m", "lossdiag", "profile", str(model), "--out", str(tmp_path / "out")],
                             env=ENV, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    ready = (lambda: _loaded_torch(child.pid)) if when == "importing torch" else (tmp_path / "started").exists
    deadline = time.monotonic() + 120
    while not ready() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    child.send_signal(signal.SIGINT)
    stdout, stderr = child.communicate(timeout=60)
    assert child.returncode == 130, (child.returncode, stderr[-2000:])
    assert stderr.strip().splitlines() == ["lossdiag: error: interrupted"], stderr[-2000:]
    assert not (tmp_path / "out").exists()


SLOW_TRAINING = ("def before_call(call):\n    if call == 6:\n        Path(__file__).with_name('training').touch()\n"
                 "        time.sleep(60)\n")


INTERRUPTED_TRAINING = "def before_call(call):\n    if call == 6:\n        raise KeyboardInterrupt\n"


def test_an_interrupt_during_training_is_one_line_and_exit_130_naming_the_kept_records(tmp_path):
    """What Ctrl-C does inside a run, in-process: the KeyboardInterrupt it raises at the sixth step (the signal itself,
    in a real process, is the slow test below)."""
    model, out = model_file(tmp_path, INTERRUPTED_TRAINING), tmp_path / "out"
    handler = signal.getsignal(signal.SIGINT)
    try:
        code, _, stderr = invoke("profile", model, *QUICK, "--steps", "12", "--out", out)
    finally:
        signal.signal(signal.SIGINT, handler)   # the command ignores a second Ctrl-C while it says so
    kept = next(out.glob("lossdiag-unfinished-*/records.jsonl"))
    assert code == 130, stderr[-2000:]
    assert stderr.strip().splitlines() == [f"lossdiag: error: interrupted; the records streamed so far are kept in "
                                           f"{kept} (lossdiag report {kept.parent} builds their page)"], stderr[-2000:]


@pytest.mark.slow
def test_ctrl_c_during_training_names_the_kept_records_in_its_one_line(tmp_path):
    """SIGINT at the sixth step: exit 130 and one line that says where the records streamed so far are kept, as a
    failure at that step says."""
    model, out = model_file(tmp_path, SLOW_TRAINING), tmp_path / "out"
    child = subprocess.Popen([sys.executable, "-m", "lossdiag", "profile", str(model), *QUICK, "--steps", "12",
                              "--out", str(out)], env=ENV, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (tmp_path / "training").exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    child.send_signal(signal.SIGINT)
    _, stderr = child.communicate(timeout=60)
    kept = next(out.glob("lossdiag-unfinished-*/records.jsonl"))
    assert child.returncode == 130, (child.returncode, stderr[-2000:])
    assert stderr.strip().splitlines() == [f"lossdiag: error: interrupted; the records streamed so far are kept in "
                                           f"{kept} (lossdiag report {kept.parent} builds their page)"], stderr[-2000:]


def test_a_skipped_check_of_a_name_needing_escapes_quotes_it_once(tmp_path):
    model = model_file(tmp_path, r'NAMES = ["x\ny", "plain"]' + "\n")
    code, stdout, stderr = invoke("profile", model, "--steps", "4", "--check-steps", "2", "--no-verify",
                                  "--out", tmp_path / "out")
    assert code in (0, 1), stderr
    assert '  "x\\ny" skipped: ' in stdout and "'plain' skipped: " in stdout, stdout
    assert "'\"" not in stdout, stdout


LONG_NAMES = ["reconstruction_loss_of_the_decoder_on_the_held_in_batches_" + tail for tail in ("a1x", "b2x")]
MIDDLE_NAMES = ["reconstruction_loss_of_the_" + middle + "_decoder_on_the_held_in_batches_x" for middle in "ab"]


def test_names_that_look_alike_are_told_apart_on_screen_on_the_page_and_in_figures(tmp_path):
    model = model_file(tmp_path, r'NAMES = ["x\ny", "x\\ny"]' + "\n")
    code, stdout, stderr = invoke("profile", model, *QUICK, "--out", tmp_path / "out")
    assert code in (0, 1), stderr
    table = stdout.split("loss first -> last", 1)[1].splitlines()[2:4]
    assert [row.split()[0] for row in table] == ['"x\\ny"', "x\\ny"]
    page = (tmp_path / "out" / "report.html").read_text()
    assert '<td class="ld-text">&quot;x\\ny&quot;</td>' in page and '<td class="ld-text">x\\ny</td>' in page
    from lossdiag.report.figures import label

    assert label("x\ny") != label("x\\ny")
    assert label("plain name") == "plain name"


@pytest.mark.parametrize("limit", [18, 24, 28, 48])
def test_long_names_sharing_a_prefix_stay_distinct_when_cut(limit):
    from lossdiag.report.figures import label

    for names in (LONG_NAMES, MIDDLE_NAMES):
        first, second = (label(name, limit) for name in names)
        assert len(names[0]) == len(names[1]) == 61 and first != second
        assert len(first) <= limit and len(second) <= limit and "…" in first
        assert first.startswith("recons") and label(names[0], limit) == first  # the same name, the same label


def test_a_monitor_whose_weights_are_all_0_says_no_term_was_trained_without_a_numpy_warning(tmp_path):
    model = torch.nn.Linear(3, 2)
    monitor = lossdiag.Monitor(model, out=tmp_path / "run", every=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(5):
            out = model(torch.randn(4, 3))
            terms = {"a": out[:, 0].mean(), "b": out[:, 1].pow(2).mean()}
            monitor.combine(terms, weights={"a": 0.0, "b": 0.0}).backward()
        summary = monitor.close()
    assert summary["verdict"].startswith("every weight was 0 on the recorded steps, so no term was trained")
