"""Damaged and crafted records.jsonl through `lossdiag report`: fields checked by type, every value escaped on the
page and in the terminal, steps put in order and repeats dropped, each repair said on the page and the terminal."""
from __future__ import annotations

import html
import json
import re

import pytest

import lossdiag
from cli_helpers import invoke
from lossdiag.record.stream import dumps
from models import DeepSupervision, deep_supervision_batch, deep_supervision_terms

REFRESH = '<meta http-equiv="refresh" content="0; url=https://example.com/">'
ESCAPES = "\x1b[2J\x1b]0;owned\x07\x9b31m"


@pytest.fixture(scope="module")
def base_records(tmp_path_factory) -> list[dict]:
    """A real profile's records, single-term checks included."""
    out = tmp_path_factory.mktemp("base")
    lossdiag.profile(DeepSupervision, [deep_supervision_batch(s) for s in range(4)], deep_supervision_terms,
                     steps=16, check_steps=10, out=str(out))
    return [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]


def write(folder, records: list) -> None:
    folder.mkdir(exist_ok=True)
    (folder / "records.jsonl").write_text("".join((r if isinstance(r, str) else dumps(r)) + "\n" for r in records))


def report(folder):
    completed = invoke("report", folder)
    page = (folder / "report.html").read_text() if (folder / "report.html").exists() else ""
    return completed, page


def no_markup_or_escapes(completed, page: str) -> None:
    assert "http-equiv=\"refresh\"" not in page and "<meta http-equiv=\"refresh" not in page
    assert not page or len(re.findall(r"<meta ", page)) == 3  # charset, the content security policy, viewport
    for text in (completed.stdout, completed.stderr):
        assert not any(ord(ch) < 32 and ch != "\n" or 0x7f <= ord(ch) < 0xa0 for ch in text), repr(text[:500])


def test_a_header_with_a_wrong_type_refuses_the_run_in_one_line(base_records, tmp_path):
    records = json.loads(json.dumps(base_records))
    records[0]["shared_parameters"]["count"] = REFRESH + ESCAPES
    write(tmp_path / "run", records)
    completed, page = report(tmp_path / "run")
    assert completed.returncode == 2 and not page
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and "'shared_parameters' has the wrong type" in lines[0]
    no_markup_or_escapes(completed, page)


def test_records_with_wrong_types_are_dropped_and_every_value_is_escaped(base_records, tmp_path):
    records = json.loads(json.dumps(base_records))
    records[0]["source"] = REFRESH + ESCAPES
    checks = [r for r in records if r["kind"] == "check"]
    checks[0]["reason"] = REFRESH + ESCAPES
    checks[1].update(status="fail", code=REFRESH + ESCAPES)
    steps = [r for r in records if r["kind"] == "step"]
    steps[3]["loss"] = {"classification": REFRESH + ESCAPES}
    steps[4]["grad"]["gram"] = [[1.0]]
    write(tmp_path / "run", records)
    completed, page = report(tmp_path / "run")
    assert completed.returncode == 0, completed.stderr
    no_markup_or_escapes(completed, page)
    assert "&lt;meta http-equiv=&quot;refresh&quot;" in page
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["steps"] == len(steps) - 2
    note = "3 records with a field of the wrong type were dropped (the first: its 'loss' has the wrong type)"
    assert summary["record_repairs"] == [note]
    assert f"Damaged records:</strong> {html.escape(note)}" in page and f"damaged records: {note}" in completed.stdout


def test_reversed_and_repeated_steps_are_put_back_in_order_and_said(base_records, tmp_path):
    write(tmp_path / "good", base_records)
    good, _ = report(tmp_path / "good")
    assert good.returncode == 0, good.stderr
    expected = json.loads((tmp_path / "good" / "summary.json").read_text())
    header, rest = base_records[0], base_records[1:]
    steps = [r for r in rest if r["kind"] == "step"]
    others = [r for r in rest if r["kind"] != "step"]
    damaged = [header, *[r for step in reversed(steps) for r in (step, step)], *others, others[0]]
    write(tmp_path / "bad", damaged)
    completed, page = report(tmp_path / "bad")
    assert completed.returncode == 0, completed.stderr
    summary = json.loads((tmp_path / "bad" / "summary.json").read_text())
    assert summary["steps"] == expected["steps"] == len(steps)
    for term in summary["terms"]:
        for key in ("loss_first", "loss_last", "grad_norm", "share"):
            assert summary["per_term"][term][key] == expected["per_term"][term][key]
    notes = ["step records were out of order and were sorted by step",
             f"{len(steps) + 1} repeated records were dropped (a step kept once)"]
    assert summary["record_repairs"] == notes
    for note in notes:
        assert html.escape(note) in page and f"damaged records: {note}" in completed.stdout


def test_a_100k_deep_json_line_is_a_usage_error_inside_and_a_torn_end_at_the_end(base_records, tmp_path):
    deep = "[" * 100_000 + "]" * 100_000
    write(tmp_path / "inside", [base_records[0], deep, *base_records[1:]])
    completed, _ = report(tmp_path / "inside")
    assert completed.returncode == 2 and "line 2 is not valid JSON" in completed.stderr
    assert len(completed.stderr.strip().splitlines()) == 1
    write(tmp_path / "end", [*base_records, deep])
    completed, page = report(tmp_path / "end")
    assert completed.returncode == 0, completed.stderr
    assert page and json.loads((tmp_path / "end" / "summary.json").read_text())["steps"] == 16
    nested = {"kind": "step", "step": 99, "loss": {}, "x": json.loads("[" * 50 + "]" * 50)}
    write(tmp_path / "nested", [*base_records, nested])
    completed, page = report(tmp_path / "nested")
    assert completed.returncode == 0, completed.stderr
    assert html.escape("the first: it nests deeper than 8 levels") in page


def test_runs_from_the_same_start_with_wrong_types_are_dropped_not_a_crash(base_records, tmp_path):
    records = json.loads(json.dumps(base_records))
    checks = [r for r in records if r["kind"] == "check"]
    checks[0]["start_batches"] = REFRESH
    checks[1]["end_batches"] = [1, 2]
    in_force = next(r for r in records if r["kind"] == "progress")
    in_force["end_batches"] = [{term: "x" for term in records[0]["terms"]}]
    records.append({"kind": "verify", "step": 1, "weights": "w", "end_batches": "x"})
    records.append({"kind": "progress", "step": 2, "weights": {t: 1.0 for t in records[0]["terms"]}, "steps": 10,
                    "progress": {}, "end_batches": in_force["start_batches"]})
    write(tmp_path / "run", records)
    completed, page = report(tmp_path / "run")
    assert completed.returncode == 0, completed.stderr
    no_markup_or_escapes(completed, page)
    note = "5 records with a field of the wrong type were dropped (the first: its 'start_batches' has the wrong type)"
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["record_repairs"] == [note]
    assert f"damaged records: {note}" in completed.stdout
