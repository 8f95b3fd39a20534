"""The report's view model: one set of plain objects built from a real profile's summary, rendered by both the
terminal and the page, so neither reads the other's text; and each figure's info planned from the same run."""
import html

import pytest

import lossdiag
from lossdiag.report import terminal
from lossdiag.report.figures import FIGURE_NAMES, figure_plan
from lossdiag.report.figures.sweep import sweep_info
from lossdiag.report.html import page
from lossdiag.report.terminal import render_view
from lossdiag.report.text import safe
from lossdiag.report.view import build_view
from paths import EXAMPLES


@pytest.fixture(scope="module")
def profiled():
    """The README example profiled briefly: single-term checks, verified candidates and a reweight to paste."""
    return lossdiag.profile(EXAMPLES / "two_outputs.py", steps=16, check_steps=10, progress=False)


def blocks(view):
    advice = view.recommendation
    return [b for b in (view.per_term, view.checks, advice and advice.outcome, advice and advice.comparison) if b]


def test_the_terminal_and_the_page_render_every_cell_and_note_of_the_same_view(profiled):
    view = build_view(profiled.summary, profiled.summary["source"], profiled.diagnosis)
    text = render_view(view)
    document = page(profiled.diagnosis, profiled.summary, figures=[])
    assert view.recommendation.kind == "reweight" and view.checks is not None and len(blocks(view)) == 4
    for block in blocks(view):
        for row in block.table.rows:
            for cell in row:
                assert safe(cell) in text
                assert f">{html.escape(safe(cell))}</td>" in document
        for sentence in (block.intro, *block.notes):
            assert safe(sentence) in text and html.escape(safe(sentence)) in document
    for finding in view.findings:
        assert safe(finding.message) in text and html.escape(safe(finding.message)) in document
        assert finding.measured is None or html.escape(finding.measured) in document
    advice = view.recommendation
    for line in ([advice.paste] if advice.paste else []) + list(advice.notes):
        assert safe(line) in text and html.escape(safe(line)) in document


def test_rewording_the_terminal_leaves_the_page_as_it_was(profiled, monkeypatch):
    before = page(profiled.diagnosis, profiled.summary, figures=[])
    monkeypatch.setattr(terminal, "block_lines", lambda block: ["reworded"])
    monkeypatch.setattr(terminal, "recommendation_lines", lambda advice: ["reworded advice"])
    assert "reworded advice" in terminal.render(profiled.summary)
    assert page(profiled.diagnosis, profiled.summary, figures=[]) == before


def test_the_figure_plan_gives_each_figure_its_info_or_the_reason_it_has_none(profiled):
    plan = figure_plan(profiled.diagnosis, profiled.summary)
    names = [planned.name for planned in plan]
    assert names == [name for name in FIGURE_NAMES if name in names]
    planned = {p.name: p for p in plan}
    run = profiled.diagnosis.run
    assert planned["losses"].info.terms == tuple(run.terms)
    assert [panel.term for panel in planned["checks"].info] == [r["term"] for r in run.extra["check"]]
    progress = planned["progress"].info
    chosen = profiled.summary["outcome"].get("chosen")
    assert progress.runs[:2] == ("alone", "weights in force") and ("recommended" in progress.runs) == (chosen is not None)
    assert ("alpha" in planned) == (profiled.diagnosis.alpha_curve is not None)
    for name in FIGURE_NAMES:
        if name in planned:
            assert (planned[name].info is None) == bool(planned[name].note)


def test_the_sweep_figure_marks_the_recommended_point_and_draws_the_front_in_order(fixtures):
    result = lossdiag.sweep(fixtures / "sweep_tradeoff.py", points=3, sweep_steps=8, steps=4, progress=False)
    sweep = result.summary
    panels = sweep_info(sweep)
    assert len(panels) == 2 + len(next((p["metrics"] for p in sweep["points"] if p.get("metrics")), {}) or {})
    progress, front = panels[0], panels[1]
    assert progress.xscale == "logit" and "batches" in progress.ylabel
    assert [line.name for line in progress.lines if line.kind == "line"] == list(sweep["terms"])
    xs = next(line.x for line in front.lines if line.kind == "front")
    assert list(xs) == sorted(xs) and len(xs) == len(sweep["pareto"])
    recommended = [mark for mark in progress.marks if mark[0] == "recommended"]
    assert bool(recommended) == (sweep["recommended"] is not None)
    if recommended:
        assert recommended[0][1] == sweep["points"][sweep["recommended"]]["alpha"]
