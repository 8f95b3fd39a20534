"""report.html in a real browser (headless Chromium): it renders, every figure loads, no console error, no request."""
import json

import pytest

import lossdiag
from browser import chromium_path, render_page
from lossdiag.advise.diagnose import diagnose
from lossdiag.record.stream import read_records
from lossdiag.report.outputs import write_outputs
from lossdiag.report.summary import build_summary
from models import DeepSupervision, deep_supervision_batch, deep_supervision_terms

pytestmark = pytest.mark.skipif(chromium_path() is None,
                                reason="headless Chromium not installed (Debian package 'chromium'; "
                                       ".ci/install-system.sh installs it)")

HOSTILE = "<img src=x onerror=alert(1)>"


def hostile_terms(model, batch):
    terms = deep_supervision_terms(model, batch)
    return {HOSTILE: terms["classification"], "regression</title><script>alert(2)</script>": terms["regression"]}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("browser")
    lossdiag.profile(DeepSupervision, [deep_supervision_batch(s) for s in range(3)], hostile_terms, steps=25,
                     check_steps=10, out=str(out))
    return out


def drawn_figures(folder):
    return sorted(p.name for p in folder.glob("*.png"))


def test_the_report_renders_offline_with_every_figure(run_dir, tmp_path):
    page = render_page(run_dir / "report.html", tmp_path / "shots" / "finished.png")
    assert page.console_errors == []
    assert page.network_requests == []
    assert page.nonblank
    assert page.title.startswith("lossdiag: ")
    assert len(drawn_figures(run_dir)) == 8   # the seven of the profile and the progress of each term under each weighting
    assert page.images_total == page.images_loaded == len(drawn_figures(run_dir))


def test_a_killed_run_renders_too(run_dir, tmp_path):
    lines = (run_dir / "records.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / "records.jsonl").write_text("".join(lines[:15]) + lines[15][:40])
    records, torn = read_records(tmp_path / "records.jsonl")
    assert torn
    diagnosis = diagnose(records, torn)
    write_outputs(tmp_path, diagnosis, build_summary(diagnosis))
    page = render_page(tmp_path / "report.html", tmp_path / "shots" / "killed.png")
    assert page.console_errors == [] and page.network_requests == [] and page.nonblank
    assert page.images_total == page.images_loaded == len(drawn_figures(tmp_path)) >= 6
    assert json.loads((tmp_path / "summary.json").read_text())["ended_early"] is True
