"""The typed records of the one schema module: kinds, statuses and severities are their own text on disk and
compare equal to the text read back; a check record written from CheckRecord has the contract's keys in order
and reads back to the same CheckRecord; the run header names every option."""
from __future__ import annotations

import json

from lossdiag.checks.findings import SEVERITY_ORDER, Finding, Severity, sort_findings
from lossdiag.config import Config
from lossdiag.record.kinds import CheckCode, CheckStatus, Kind, SweepKind
from lossdiag.record.schema import FIELDS, SWEEP_FIELDS, CheckRecord, fault, run_header, valid
from lossdiag.record.stream import dumps

CHECK_KEYS = ["kind", "step", "term", "status", "code", "losses", "loss_start", "loss_end", "relative_drop", "reason",
              "steps", "noise", "probe_batches", "nonfinite_steps", "on", "start_batches", "end_batches"]


def ran() -> CheckRecord:
    return CheckRecord(1, "aux", CheckStatus.FAIL, CheckCode.DIVERGING, [1.0, 2.0], 1.0, float("nan"), None,
                       "the term became non-finite, trained alone", 2, None, 2, 1, "probe",
                       [{"aux": 1.0}, {"aux": 1.5}], [{"aux": 3.0}, {"aux": 4.0}])


def test_members_are_written_as_their_text_and_read_back_equal():
    record = {"kind": Kind.CHECK, "status": CheckStatus.SKIPPED, "severity": Severity.WARNING}
    assert dumps(record) == '{"kind":"check","status":"skipped","severity":"warning"}'
    assert json.loads(dumps(record)) == record
    assert f"{Kind.STEP}" == str(Kind.STEP) == "step" and Kind("nonfinite-update") is Kind.NONFINITE_UPDATE


def test_every_kind_the_schema_checks_is_a_named_kind():
    assert set(FIELDS) <= set(Kind) and set(SWEEP_FIELDS) == set(SweepKind)


def test_a_check_record_has_the_contracts_keys_in_order_and_passes_the_schema():
    record = ran().to_record()
    assert list(record) == CHECK_KEYS
    assert fault(json.loads(dumps(record)), ["main", "aux"]) is None


def test_a_skipped_check_that_never_ran_has_no_evaluation_batches():
    record = CheckRecord(0, "main", CheckStatus.SKIPPED, None, [], None, None, None, "detached", 0, None, 0,
                         0).to_record()
    assert list(record) == CHECK_KEYS[:-3] and record["status"] == "skipped"
    assert fault(json.loads(dumps(record)), ["main"]) is None


def test_a_check_record_read_back_from_disk_is_the_same_record():
    written = json.loads(dumps(ran().to_record()))
    read = CheckRecord.from_record(written)
    assert read.status is CheckStatus.FAIL and read.code is CheckCode.DIVERGING
    assert read.to_record() == written


def test_a_status_the_schema_does_not_know_drops_the_record():
    header = run_header("model.py", ["main"], {"main": 1.0}, Config())
    bad = {**ran().to_record(), "term": "main", "status": "passed"}
    kept, notes = valid([header, json.loads(dumps(bad))])
    assert kept == [header] and "'status' has the wrong type" in notes[0]


def test_the_run_header_names_the_kind_the_terms_the_weights_and_every_option():
    header = run_header("model.py", ["a", "b"], {"a": 1.0, "b": 0.5}, Config(steps=7), scope="all")
    assert header["kind"] == Kind.META and header["step"] == 0 and header["terms"] == ["a", "b"]
    assert header["config"]["steps"] == 7 and header["scope"] == "all"
    assert run_header("m.py", ["a"], {"a": 1.0}, Config(), kind=SweepKind.SWEEP)["kind"] == "sweep"


def test_findings_sort_by_severity_errors_first():
    found = [Finding("x", Severity.INFO, [], "", ""), Finding("y", Severity.ERROR, [], "", ""),
             Finding("z", Severity.WARNING, [], "", "")]
    assert [f.code for f in sort_findings(found)] == ["y", "z", "x"]
    assert SEVERITY_ORDER["warning"] == SEVERITY_ORDER[Severity.WARNING]
