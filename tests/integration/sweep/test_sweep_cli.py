"""`lossdiag sweep` as a user runs it: outputs, --jobs, a broken validate, a killed sweep and `lossdiag report`."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

import lossdiag
from lossdiag.report.figures.sweep import progress_label
from cli_helpers import ENV, invoke, kill_when

QUICK = ["--steps", "30", "--sweep-steps", "60", "--points", "5"]


def test_a_sweep_writes_its_outputs_and_does_not_depend_on_jobs(fixtures, tmp_path):
    out = tmp_path / "parallel"
    completed = invoke("sweep", fixtures / "sweep_tradeoff.py", *QUICK, "--metric", "held_out_error",
                       "--jobs", "2", "--out", out)
    assert completed.returncode == 0, completed.stderr
    assert completed.stderr == ""
    assert "recommended: alpha" in completed.stdout and "check it: lossdiag profile" in completed.stdout
    written = json.loads((out / "sweep.json").read_text())
    assert written["complete"] and len(written["points"]) == written["planned_points"] == 5
    serial = lossdiag.sweep(fixtures / "sweep_tradeoff.py", steps=30, sweep_steps=60, points=5,
                            metric="held_out_error", jobs=1)
    for mine, theirs in zip(serial.summary["points"], written["points"]):
        assert (mine["weights"], mine["progress"], mine["final"], mine["metrics"]) == \
               (theirs["weights"], theirs["progress"], theirs["final"], theirs["metrics"])
    assert serial.summary["alone"] == written["alone"] and serial.summary["recommended"] == written["recommended"]
    for name in ("sweep.html", "sweep.png", "sweep_records.jsonl"):
        assert (out / name).is_file()


def test_a_validate_that_raises_is_one_line_exit_2_and_no_outputs(fixtures, tmp_path):
    completed = invoke("sweep", fixtures / "sweep_broken_validate.py", *QUICK, "--metric", "held_out_error",
                       "--out", tmp_path / "out")
    assert completed.returncode == 2
    assert completed.stderr.strip().count("\n") == 0 and "Traceback" not in completed.stderr
    assert "validate(model), asked for --metric 'held_out_error', raised ZeroDivisionError" in completed.stderr
    assert not (tmp_path / "out").exists()


def test_an_unknown_metric_is_one_line_exit_2(fixtures, tmp_path):
    completed = invoke("sweep", fixtures / "sweep_tradeoff.py", *QUICK, "--metric", "accuracy",
                       "--out", tmp_path / "out")
    assert completed.returncode == 2
    assert completed.stderr.strip() == (f"lossdiag: error: {fixtures / 'sweep_tradeoff.py'}: --metric 'accuracy' "
                                        f"is not among the metrics validate(model) returns: held_out_error, "
                                        f"agreement_max")


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _points_done(path: Path) -> int:
    return path.read_text().count('"kind":"point"') if path.is_file() else 0


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs /proc to find the worker processes")
def test_a_killed_sweep_keeps_its_points_and_report_rebuilds_the_page(fixtures, tmp_path):
    out = tmp_path / "killed"
    child = subprocess.Popen([sys.executable, "-m", "lossdiag", "sweep", str(fixtures / "sweep_slow.py"), "--steps",
                              "10", "--sweep-steps", "40", "--points", "9", "--jobs", "2", "--out", str(out)],
                             env=ENV, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    workers: list[int] = []

    def two_points_done() -> bool:
        workers[:] = _children(child.pid)
        return sum(_points_done(path) for path in out.glob("lossdiag-unfinished-*/sweep_records.jsonl")) >= 2

    kill_when(child, two_points_done, 180, "two finished points")
    assert len(workers) >= 2
    deadline = time.monotonic() + 30
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(w) for w in workers), "worker processes outlived the killed sweep"
    kept = list(out.glob("lossdiag-unfinished-*/sweep_records.jsonl"))
    assert len(kept) == 1 and not (out / "sweep_records.jsonl").exists() and not (out / "sweep.html").exists()
    done, run = _points_done(kept[0]), kept[0].parent
    report = invoke("report", run)
    assert report.returncode == 0, report.stderr
    written = json.loads((run / "sweep.json").read_text())
    assert not written["complete"] and len(written["points"]) == done < written["planned_points"]
    assert written["recommended"] is not None
    page = (run / "sweep.html").read_text()
    assert "This sweep ended early" in page and f"{done} of {written['planned_points']} points finished" in page
    assert (run / "sweep.png").is_file()


def test_report_on_a_folder_without_records_says_so(tmp_path):
    completed = invoke("report", tmp_path)
    assert completed.returncode == 2 and "records.jsonl: no such file" in completed.stderr


def test_profile_of_a_trade_off_prints_the_sweep_command(fixtures, tmp_path):
    completed = invoke("profile", fixtures / "opposed.py", "--steps", "30", "--no-checks", "--out", tmp_path)
    assert f"lossdiag sweep {fixtures / 'opposed.py'}" in completed.stdout, completed.stdout


def test_a_sweep_judged_on_validation_batches_names_them_and_shows_a_term_from_near_0_as_from_0(fixtures, tmp_path):
    out = tmp_path / "vae"
    completed = invoke("sweep", fixtures / "outcome_vae.py", "--steps", "10", "--sweep-steps", "20", "--points", "3",
                       "--out", out)
    assert completed.returncode == 0, completed.stderr
    written = json.loads((out / "sweep.json").read_text())
    assert written["probe"]["on"] == "validation"
    assert any(abs(point["progress"]["kl"]) > 10 for point in written["points"])
    page = (out / "sweep.html").read_text()
    for text in (completed.stdout, page):
        assert "from ~0" in text and not re.search(r"\de\+\d+%", text)
        assert "validation batches" in text and "probe batches" not in text
    assert "validation batches" in progress_label(written["probe"])
