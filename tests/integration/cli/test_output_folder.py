"""The output folder through the real command line: a run replaces lossdiag's earlier outputs only when it
succeeds, keeps its streamed records where its message says when it fails, and never touches a file it did not
write (`--out .` in a folder with the user's own files)."""
from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from cli_helpers import ENV, invoke, model_file

FAILING = ("def before_call(call):\n    if call == int(os.environ.get('FAIL_AT_CALL', '0')):\n"
           "        raise RuntimeError('the data went away')\n")


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def first_run(tmp_path: Path) -> tuple[Path, Path, dict[str, bytes]]:
    model, out = model_file(tmp_path, FAILING), tmp_path / "out"
    completed = invoke("profile", model, "--steps", "12", "--check-steps", "10", "--out", out)
    assert completed.returncode == 0, completed.stderr
    (out / "notes.txt").write_text("the user's own file")
    return model, out, snapshot(out)


def test_a_later_usage_error_leaves_the_earlier_outputs_and_names_the_kept_records(tmp_path):
    model, out, before = first_run(tmp_path)
    completed = invoke("profile", model, "--steps", "12", "--no-checks", "--out", out, env={"FAIL_AT_CALL": "8"})
    assert completed.returncode == 2
    line = completed.stderr.strip()
    assert "at step 6 raised RuntimeError: the data went away" in line and len(line.splitlines()) == 1
    assert snapshot(out) == before
    kept = next(out.glob("lossdiag-unfinished-*/records.jsonl"))
    assert f"the records streamed so far are kept in {kept}" in line
    assert sum('"kind":"step"' in row for row in kept.read_text().splitlines()) == 6
    report = invoke("report", kept.parent)
    assert report.returncode == 0, report.stderr


def _small_files() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))


@pytest.mark.slow
def test_a_failed_write_leaves_the_earlier_outputs_whole(tmp_path):
    model, out, before = first_run(tmp_path)
    completed = subprocess.run([sys.executable, "-m", "lossdiag", "profile", str(model), "--steps", "20",
                                "--check-steps", "10", "--seed", "3", "--out", str(out)], env=ENV,
                               capture_output=True, text=True, stdin=subprocess.DEVNULL, preexec_fn=_small_files)
    assert completed.returncode == 2, completed.stderr
    assert "cannot write the outputs" in completed.stderr and "Traceback" not in completed.stderr
    assert snapshot(out) == before


def test_out_dot_never_touches_the_users_files(tmp_path):
    model = model_file(tmp_path)
    (tmp_path / "weights.png").write_bytes(b"my own figure")
    refused = invoke("profile", model, "--steps", "12", "--no-checks", "--out", ".", cwd=tmp_path)
    assert refused.returncode == 2
    assert "'weights.png' there was not written by lossdiag; choose another --out" in refused.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.py", "weights.png"]
    (tmp_path / "weights.png").rename(tmp_path / "mine.png")
    for steps in ("12", "14"):
        completed = invoke("profile", model, "--steps", steps, "--check-steps", "10", "--out", ".", cwd=tmp_path)
        assert completed.returncode == 0, completed.stderr
    assert (tmp_path / "mine.png").read_bytes() == b"my own figure"
    names = {p.name for p in tmp_path.iterdir()}
    assert {"model.py", "mine.png", "records.jsonl", "summary.json", "report.html"} <= names
    assert not any(name.startswith("lossdiag-unfinished-") for name in names)
    assert os.path.getsize(tmp_path / "report.html") > 0


def test_a_sweep_rerun_that_fails_leaves_the_earlier_sweep_and_a_users_file_alone(fixtures, tmp_path):
    out = tmp_path / "out"
    first = invoke("sweep", fixtures / "sweep_tradeoff.py", "--steps", "10", "--sweep-steps", "10", "--points", "3",
                   "--jobs", "1", "--out", out)
    assert first.returncode in (0, 1), first.stderr
    before = {name: (out / name).read_bytes() for name in ("sweep.json", "sweep.html", "sweep_records.jsonl")}
    (out / "notes.txt").write_text("mine")
    failed = invoke("sweep", fixtures / "sweep_tradeoff.py", "--steps", "10", "--sweep-steps", "10", "--points", "3",
                    "--metric", "no_such_metric", "--out", out)
    assert failed.returncode == 2 and failed.stderr.count("\n") == 1
    assert {name: (out / name).read_bytes() for name in before} == before
    assert (out / "notes.txt").read_text() == "mine"
    assert not list(out.glob("lossdiag-unfinished-*"))
    profile = invoke("profile", fixtures / "sweep_tradeoff.py", "--steps", "5", "--check-steps", "0",
                     "--out", out)
    assert (out / "summary.json").is_file() and (out / "sweep.json").is_file(), profile.stderr
