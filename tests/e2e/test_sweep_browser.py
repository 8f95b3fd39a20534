"""sweep.html in a real browser (headless Chromium): it renders offline, its figure loads, hostile names stay text."""
import pytest

import lossdiag
from browser import render_page
from lossdiag.record.stream import finite_or_none, read_records
from lossdiag.report.sweep_outputs import write_sweep_outputs
from lossdiag.sweep.records import SweepData
from models import DeepSupervision, deep_supervision_batch
from test_report_browser import HOSTILE, hostile_terms, pytestmark  # noqa: F401 - the report's skip and names


def hostile_validate(model):
    x, labels, _ = deep_supervision_batch(7)
    logits, _ = model(x)
    return {"<b>accuracy</b>_max": float((logits.argmax(1) == labels).float().mean())}


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep-browser")
    lossdiag.sweep(DeepSupervision, [deep_supervision_batch(s) for s in range(3)], hostile_terms,
                   validate=hostile_validate, metric="<b>accuracy</b>_max", steps=10, sweep_steps=10, points=5,
                   out=str(out))
    return out


def test_the_sweep_page_renders_offline_with_its_figure(sweep_dir, tmp_path):
    page = render_page(sweep_dir / "sweep.html", tmp_path / "shots" / "sweep.png")
    assert page.console_errors == [] and page.network_requests == []
    assert page.nonblank and page.title.startswith("lossdiag sweep")
    assert page.images_total == page.images_loaded == 1
    html = (sweep_dir / "sweep.html").read_text()
    assert HOSTILE not in html and "&lt;img src=x onerror=alert(1)&gt;" in html and "<script>" not in html


def test_a_partial_sweep_renders_too(sweep_dir, tmp_path):
    records, _ = read_records(sweep_dir / "sweep_records.jsonl")
    partial = [r for r in records if r["kind"] != "end"][:5]
    data = SweepData.from_records(partial)
    write_sweep_outputs(tmp_path, finite_or_none(data.to_json()), data.meta["config"])
    page = render_page(tmp_path / "sweep.html", tmp_path / "shots" / "partial.png")
    assert page.console_errors == [] and page.network_requests == [] and page.nonblank
    assert page.images_total == page.images_loaded == 1
    assert "This sweep ended early" in (tmp_path / "sweep.html").read_text()
