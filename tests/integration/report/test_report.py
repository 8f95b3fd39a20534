"""The report: report.html and the PNG figures from real runs, `lossdiag report` on finished and killed runs,
escaping of hostile names, the page size of a long run, and the notebook fragment."""
import html
import io
import json
import re
import shutil
import subprocess
import sys
import textwrap

import matplotlib.image
import numpy as np
import pytest
from click.testing import CliRunner
from matplotlib.figure import Figure

import lossdiag
from cli_helpers import ENV, invoke
from lossdiag.cli import main
from lossdiag.record.stream import dumps, read_records
from lossdiag.report import downsample, figures
from models import DeepSupervision, deep_supervision_batch, deep_supervision_terms

HOSTILE = "<img src=x onerror=alert(1)>"
DOLLARS = '$\\alpha$ & "b"'
TWO_TERM_PNGS = ["losses", "shares", "grad_norms", "cosines", "checks", "progress", "alpha", "layers"]
BATCHES = [deep_supervision_batch(seed) for seed in range(4)]

HOSTILE_MODEL = textwrap.dedent('''
    import torch
    import torch.nn as nn
    import torch.nn.functional as F


    def build_model():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 2))


    def batches():
        g = torch.Generator().manual_seed(0)
        for _ in range(4):
            x = torch.randn(24, 4, generator=g)
            yield x, x[:, :2] * torch.tensor([1.0, 40.0])


    def losses(model, batch):
        x, y = batch
        out = model(x)
        return {NAMES[0]: F.mse_loss(out[:, 0], y[:, 0]), NAMES[1]: F.mse_loss(out[:, 1], y[:, 1])}
''')


def hostile_terms(model, batch):
    terms = deep_supervision_terms(model, batch)
    return {HOSTILE: terms["classification"], DOLLARS: terms["regression"]}


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory):
    """A real profile, single-term checks included, whose terms are named to break HTML and mathtext."""
    out = tmp_path_factory.mktemp("hostile")
    result = lossdiag.profile(DeepSupervision, BATCHES, hostile_terms, steps=30, check_steps=12, out=str(out))
    return result, out


def write_model(folder, names=(HOSTILE, DOLLARS)):
    path = folder / "hostile_model.py"
    path.write_text(f"NAMES = {list(names)!r}\n" + HOSTILE_MODEL)
    return path


def png_shape(data: bytes) -> tuple:
    return matplotlib.image.imread(io.BytesIO(data), format="png").shape


def svg_text(figure: Figure) -> str:
    """A figure as SVG with text kept as text, so what a reader sees can be searched."""
    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        figure.savefig(buffer, format="svg")
    return buffer.getvalue()


def test_a_profile_writes_the_page_and_every_figure(hostile_run):
    result, out = hostile_run
    for name in TWO_TERM_PNGS:
        height, width, _ = png_shape((out / f"{name}.png").read_bytes())
        assert height > 200 and width > 300
    assert not (out / "weights.png").exists()
    page = (out / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == len(TWO_TERM_PNGS)
    assert html.escape(result.summary["verdict"]) in page
    paste = "loss_total = " + " + ".join(f"{result.summary['recommended_weights'][t]:.3g} * {html.escape(t)}"
                                         for t in result.summary["terms"])
    assert (paste in page) == (result.summary["recommendation"] == "reweight")
    assert html.escape(result.summary["recommendation_reason"]) in page
    for finding in result.summary["findings"]:
        assert html.escape(finding["advice"]) in page
    assert f"torch {result.summary['torch_version']}" in page
    assert f"lossdiag {lossdiag.__version__}" in page


def test_the_page_reads_top_down(hostile_run):
    page = (hostile_run[1] / "report.html").read_text()
    order = ['class="ld-verdict', "<h2>Recommendation", "<h2>Findings", "<h2>Per term",
             "<h2>Figures", 'id="ld-losses"', 'id="ld-alpha"', "<h2>Configuration"]
    positions = [page.index(marker) for marker in order]
    assert positions == sorted(positions)


def test_findings_show_measured_value_threshold_and_what_to_do(hostile_run):
    result, out = hostile_run
    page = (out / "report.html").read_text()
    dominant = [f for f in result.summary["findings"] if f["code"] == "dominant-term"]
    assert dominant, "the x40 term should dominate this model's shared layer"
    assert f"measured {dominant[0]['value']:.4g} · threshold {dominant[0]['threshold']:g}" in page
    severities = re.findall(r'<li class="ld-(\w+)"><p><span class="ld-badge">', page)
    order = {"error": 0, "warning": 1, "info": 2}
    assert severities == sorted(severities, key=order.get)


def test_hostile_names_are_text_in_the_page(hostile_run):
    page = (hostile_run[1] / "report.html").read_text()
    assert HOSTILE not in page and "<img src=x" not in page
    assert html.escape(HOSTILE) in page and html.escape(DOLLARS) in page
    tags = set(re.findall(r"<([a-zA-Z][a-zA-Z0-9]*)", page))
    assert tags <= {"html", "head", "meta", "title", "style", "body", "div", "h1", "h2", "p", "section", "span",
                    "small", "pre", "ol", "li", "code", "strong", "table", "thead", "tbody", "tr", "th", "td",
                    "figure", "img", "figcaption", "details", "summary"}
    assert not re.search(r"(src|href)=\"(?!data:image/png;base64,)", page)


def test_hostile_names_are_literal_in_the_figures_text():
    steps = np.arange(40)
    losses = np.column_stack([np.linspace(3, 1, 40), np.linspace(50, 5, 40)])
    text = svg_text(figures.loss_curves(steps, losses, [HOSTILE, DOLLARS]))
    assert html.escape(HOSTILE, quote=False) in text
    assert html.escape(DOLLARS, quote=False) in text or html.escape(DOLLARS) in text
    heatmap = svg_text(figures.cosine_heatmap(np.eye(2), [HOSTILE, DOLLARS]))
    assert html.escape(HOSTILE, quote=False) in heatmap and html.escape(DOLLARS, quote=False) in heatmap


def test_hostile_names_in_the_terminal_and_the_cli_page(tmp_path):
    model = write_model(tmp_path, names=(HOSTILE, "\x1b[2Jwiped"))
    completed = invoke("profile", model, "--steps", "8", "--no-checks", "--out", tmp_path / "out")
    assert completed.returncode == 0, completed.stderr
    assert HOSTILE in completed.stdout and "\\x1b[2Jwiped" in completed.stdout
    assert "\x1b" not in completed.stdout
    page = (tmp_path / "out" / "report.html").read_text()
    assert html.escape(HOSTILE) in page and "\\x1b[2Jwiped" in page and "\x1b" not in page


def test_report_rebuilds_the_same_figures_from_records_alone(hostile_run, tmp_path):
    result, out = hostile_run
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    shutil.copy(out / "records.jsonl", run_dir / "records.jsonl")
    completed = invoke("report", run_dir, "--out", tmp_path / "rebuilt")
    assert completed.returncode == 0, completed.stderr
    assert "report.html" in completed.stdout
    for name in TWO_TERM_PNGS:
        assert (tmp_path / "rebuilt" / f"{name}.png").read_bytes() == (out / f"{name}.png").read_bytes()
    rebuilt = json.loads((tmp_path / "rebuilt" / "summary.json").read_text())
    assert rebuilt["verdict"] == result.summary["verdict"]
    assert rebuilt["suggested_weights"] == pytest.approx(result.summary["suggested_weights"])
    assert "ended early" not in (tmp_path / "rebuilt" / "report.html").read_text()


def test_report_on_records_cut_mid_line_says_the_run_ended_early(hostile_run, tmp_path):
    text = (hostile_run[1] / "records.jsonl").read_text()
    lines = text.splitlines(keepends=True)
    kept = "".join(lines[:20]) + lines[20][: len(lines[20]) // 2]
    (tmp_path / "records.jsonl").write_text(kept)
    records, torn = read_records(tmp_path / "records.jsonl")
    assert torn and len(records) == 20

    completed = invoke("report", tmp_path)
    assert completed.returncode == 0, completed.stderr
    page = (tmp_path / "report.html").read_text()
    assert "This run ended early" in page and "step 18 of 30 planned" in page
    assert "cut in the middle" in page
    assert json.loads((tmp_path / "summary.json").read_text())["ended_early"] is True
    assert (tmp_path / "losses.png").is_file() and not (tmp_path / "checks.png").exists()
    assert "not drawn (no single-term checks in this run)" in page


@pytest.mark.parametrize("setup, message", [
    ("missing", "no such folder"),
    ("empty", "records.jsonl: no such file"),
    ("garbage", "not lossdiag records"),
    ("no_header", "not lossdiag records"),
])
def test_report_on_a_folder_without_lossdiag_records_is_a_usage_error(tmp_path, setup, message):
    folder = tmp_path / "run"
    if setup != "missing":
        folder.mkdir()
    if setup == "garbage":
        (folder / "records.jsonl").write_text("this is not json\nnor this\n")
    if setup == "no_header":
        (folder / "records.jsonl").write_text('{"step": 0, "kind": "step", "loss": {}}\n')
    completed = CliRunner().invoke(main, ["report", str(folder)])
    assert completed.exit_code == 2
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in completed.stderr


def test_a_monitor_run_with_a_proxy_scope_is_labelled(hostile_run, tmp_path):
    records, _ = read_records(hostile_run[1] / "records.jsonl")
    records[0] = {**records[0], "source": "monitor", "scope": "last_shared_layer"}
    steps_only = [r for r in records if r["kind"] in ("meta", "step")]
    (tmp_path / "records.jsonl").write_text("".join(dumps(r) + "\n" for r in steps_only))
    completed = invoke("report", tmp_path)
    assert completed.returncode == 0, completed.stderr
    page = (tmp_path / "report.html").read_text()
    assert "Proxy scope 'last_shared_layer'" in page
    assert "recorded in the training loop by lossdiag.Monitor" in page
    assert "ended early" in page and "planned" not in page


def test_a_20000_step_run_gives_a_page_under_2_mb(hostile_run, tmp_path):
    records, _ = read_records(hostile_run[1] / "records.jsonl")
    steps = [r for r in records if r["kind"] == "step"]
    rng = np.random.default_rng(0)
    with (tmp_path / "records.jsonl").open("w") as handle:
        handle.write(dumps(records[0]) + "\n")
        for step in range(20000):
            record = json.loads(json.dumps(steps[step % len(steps)]))
            record["step"] = step
            record["loss"] = {t: v * float(rng.lognormal(0, 0.3)) for t, v in record["loss"].items()}
            if step % 5:
                record.pop("grad", None)
            handle.write(dumps(record) + "\n")
        handle.write(dumps({"kind": "end", "step": 19999, "steps": 20000}) + "\n")
    completed = invoke("report", tmp_path)
    assert completed.returncode == 0, completed.stderr
    size = (tmp_path / "report.html").stat().st_size
    assert size < 2_000_000
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["steps"] == 20000 and summary["recorded_steps"] == 4000


def test_three_terms_get_a_weights_figure_only_when_the_weights_change_and_a_clean_page(fixtures, tmp_path):
    result = lossdiag.profile(str(fixtures / "healthy_three.py"), steps=20, no_checks=True, out=str(tmp_path))
    assert result.summary["status"] == "ok"
    changed = result.summary["recommended_weights"] != result.summary["weights"]
    assert (tmp_path / "weights.png").is_file() == changed and not (tmp_path / "alpha.png").exists()
    page = (tmp_path / "report.html").read_text()
    assert "No findings" in page and 'class="ld-verdict ld-ok"' in page


def test_a_figure_this_run_cannot_draw_removes_an_older_png(tmp_path):
    lossdiag.profile(DeepSupervision, BATCHES, deep_supervision_terms, steps=5, check_steps=10, out=str(tmp_path))
    assert (tmp_path / "checks.png").exists()
    lossdiag.profile(DeepSupervision, BATCHES, deep_supervision_terms, steps=5, no_checks=True, out=str(tmp_path))
    assert not (tmp_path / "checks.png").exists()
    assert "not drawn (no single-term checks in this run)" in (tmp_path / "report.html").read_text()


def test_the_notebook_fragment_is_inline_and_scoped(hostile_run):
    result, _ = hostile_run
    fragment = result._repr_html_()
    assert fragment.startswith('<div class="lossdiag-report"><style>')
    assert "<iframe" not in fragment and "<html" not in fragment and "<script" not in fragment
    assert html.escape(result.summary["verdict"]) in fragment
    assert fragment.count('src="data:image/png;base64,') == len(TWO_TERM_PNGS)
    css = fragment[fragment.index("<style>") + 7: fragment.index("</style>")]
    selectors = [s.strip() for rule in re.findall(r"([^{}]+)\{", css) for s in rule.split(",")]
    assert selectors and all(s.startswith(".lossdiag-report") for s in selectors)


def test_figures_draw_on_a_given_ax():
    figure = Figure()
    left, right = figure.subplots(1, 2)
    steps = np.arange(10)
    returned = figures.grad_norms(steps, np.column_stack([np.full(10, 2.0), np.full(10, 0.01)]), ["a", "b"], ax=right)
    assert returned is figure
    assert len(right.get_lines()) == 2 and not left.get_lines()
    assert right.get_yscale() == "log"


@pytest.mark.slow
def test_importing_lossdiag_and_drawing_never_touch_pyplot(hostile_run):
    code = ("import sys, lossdiag\n"
            "assert 'matplotlib' not in sys.modules, 'import lossdiag imported matplotlib'\n"
            "from lossdiag.record.stream import read_records\n"
            "from lossdiag.advise.diagnose import diagnose\n"
            "from lossdiag.report.summary import build_summary\n"
            "from lossdiag.report.figures import report_figures\n"
            f"records, torn = read_records({str(hostile_run[1] / 'records.jsonl')!r})\n"
            "d = diagnose(records, torn)\n"
            "drawn = [f for f in report_figures(d, build_summary(d)) if f.png]\n"
            f"assert len(drawn) == {len(TWO_TERM_PNGS)} and 'matplotlib.pyplot' not in sys.modules\n")
    completed = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr


def _bucket_reference(values, edges, reduce):
    bounds = list(edges) + [len(values)]
    out = []
    for start, stop in zip(bounds[:-1], bounds[1:]):
        chunk = values[start:stop]
        finite = chunk[np.isfinite(chunk)]
        out.append(reduce(finite) if finite.size else np.nan)
    return np.array(out)


def test_downsampling_matches_per_bucket_brute_force():
    rng = np.random.default_rng(1)
    values = rng.lognormal(size=2345)
    values[rng.choice(2345, 100, replace=False)] = np.nan
    values[1000:1010] = np.nan
    steps = np.arange(2345)
    edges = downsample.bucket_edges(2345, 300)
    assert len(edges) <= 300
    centres, means = downsample.bucket_mean(steps, values, 300)
    _, low, high = downsample.bucket_range(steps, values, 300)
    np.testing.assert_allclose(means, _bucket_reference(values, edges, np.mean), equal_nan=True)
    np.testing.assert_allclose(low, _bucket_reference(values, edges, np.min), equal_nan=True)
    np.testing.assert_allclose(high, _bucket_reference(values, edges, np.max), equal_nan=True)
    np.testing.assert_allclose(centres, _bucket_reference(steps.astype(float), edges, np.mean))
    short = np.arange(40.0)
    for thinned in (downsample.bucket_mean(short, short, 300), downsample.bucket_range(short, short, 300)):
        assert all(np.array_equal(part, short) for part in thinned)


def test_rolling_mean_matches_a_loop_and_skips_nan():
    rng = np.random.default_rng(2)
    values = rng.normal(size=(200, 2))
    values[5:9, 0] = np.nan
    window = 9
    smooth = downsample.rolling_mean(values, window)
    for i in range(200):
        chunk = values[max(0, i - 4): i + 5]
        for k in range(2):
            finite = chunk[:, k][np.isfinite(chunk[:, k])]
            assert smooth[i, k] == pytest.approx(finite.mean())
