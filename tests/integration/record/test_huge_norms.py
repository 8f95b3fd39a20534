"""Gradient norms past the range of their dtype's squares (issue 16, item 3): a float32 norm above ~1.8e19 squares
past 3.4e38, one below ~1e-23 squares to 0. Both are measured exactly, by the Monitor and the profile, in every
dtype, and neither is mistaken for a non-finite or a zero gradient."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from click.testing import CliRunner
from matplotlib.figure import Figure

import lossdiag
from lossdiag import Monitor
from cli_helpers import model_file
from lossdiag.cli import main
from lossdiag.record.stream import read_records
from lossdiag.report.figures import drawn_figure
from reference import flat_term_gradients, gram, relative_error

TOLERANCE = 1e-6


class Extremes(nn.Module):
    """A shared trunk and two heads of the given dtype; 'huge' and 'tiny' are scaled far from 1."""

    def __init__(self, dtype: torch.dtype, huge: float, tiny: float) -> None:
        super().__init__()
        self.trunk = nn.Linear(8, 16, dtype=dtype)
        self.head_a = nn.Linear(16, 2, dtype=dtype)
        self.head_b = nn.Linear(16, 2, dtype=dtype)
        self.huge, self.tiny = huge, tiny

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = torch.tanh(self.trunk(x.to(self.trunk.weight.dtype)))
        a, b = self.head_a(h), self.head_b(h)
        terms = {"huge": self.huge * a.abs().pow(2).mean(), "plain": (b - 1).abs().pow(2).mean(),
                 "tiny": self.tiny * h.abs().mean()}
        return {name: value.to(torch.promote_types(value.dtype, torch.float32)) for name, value in terms.items()}


def batch(seed: int) -> torch.Tensor:
    return torch.randn(6, 8, generator=torch.Generator().manual_seed(seed))


def reference(terms: dict[str, torch.Tensor], model: nn.Module) -> tuple[torch.Tensor, dict[str, float]]:
    """Plain autograd per term, in float64: the Gram matrix on the trunk (which all three terms share) and each
    term's norm on every parameter it reaches."""
    full = {t: float(g.norm()) for t, g in flat_term_gradients(terms, list(model.parameters())).items()}
    return gram(flat_term_gradients(terms, list(model.trunk.parameters()))), full


DTYPES = [(torch.float32, 1e25, 1e-30), (torch.bfloat16, 1e25, 1e-30), (torch.complex64, 1e25, 1e-30),
          (torch.float64, 1e140, 1e-140),
          # squares between 1e-46 and 1e-44: float32 subnormals, their sum neither 0 nor right to 1e-6
          (torch.float32, 1e21, 1e-21)]


@pytest.mark.parametrize("dtype, huge, tiny", DTYPES)
def test_monitor_measures_norms_past_the_range_of_their_squares(tmp_path, dtype, huge, tiny):
    torch.manual_seed(0)
    model = Extremes(dtype, huge, tiny)
    monitor = Monitor(model, out=tmp_path, every=1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    expected = []
    for seed in range(2):
        terms = model(batch(seed))
        expected.append(reference(terms, model))
        optimizer.zero_grad()
        monitor.combine(terms).backward()
        optimizer.step()
    summary = monitor.close()
    steps = [r for r in read_records(tmp_path / "records.jsonl")[0] if r["kind"] == "step"]
    for record, (expected_gram, expected_full) in zip(steps, expected):
        assert "nonfinite" not in record
        actual = torch.tensor(record["grad"]["gram"], dtype=torch.float64)
        norms = expected_gram.diagonal().sqrt()
        assert norms[0] > (1e19 if dtype != torch.float64 else 1e130) and 0 < norms[2] < 1e-20
        assert relative_error(actual, expected_gram, torch.outer(norms, norms)) < TOLERANCE
        for k, term in enumerate(expected_full):
            assert record["grad"]["norms"][term] == pytest.approx(float(norms[k]), rel=TOLERANCE)
            assert record["grad"]["norms_all"][term] == pytest.approx(expected_full[term], rel=TOLERANCE)
    assert not {"non-finite", "zero-grad"} & {f["code"] for f in summary["findings"]}


def test_profile_steps_on_a_float32_gradient_norm_of_1e25():
    """The profile records the norms as they are and applies every update (a step it judged non-finite would be
    recorded but not applied: the loss of the same batch would not move)."""
    make = lambda: Extremes(torch.float32, 1e25, 1e-30)  # noqa: E731
    result = lossdiag.profile(make, [batch(0)], lambda m, x: m(x), steps=4, every=2, no_checks=True,
                              no_verify=True)
    torch.manual_seed(result.diagnosis.config.seed)
    model = make()
    expected_gram, expected_full = reference(model(batch(0)), model)
    steps = [r for r in result.records if r.get("kind") == "step"]
    first = steps[0]["grad"]
    for k, term in enumerate(expected_full):
        assert first["norms"][term] == pytest.approx(math.sqrt(float(expected_gram[k, k])), rel=TOLERANCE)
        assert first["norms_all"][term] == pytest.approx(expected_full[term], rel=TOLERANCE)
    assert all("nonfinite" not in r for r in steps)
    assert not [r for r in result.records if r.get("kind") == "nonfinite-update"]
    assert all(steps[k + 1]["loss"]["plain"] != steps[k]["loss"]["plain"] for k in range(3))
    assert not {"non-finite", "zero-grad"} & {f["code"] for f in result.summary["findings"]}


class TwoTerms(nn.Module):
    """A shared trunk and two float32 heads; 'huge' scaled so its gradient norm is ~1e17 times the other's."""

    def __init__(self, huge: float) -> None:
        super().__init__()
        self.trunk, self.head_a, self.head_b = nn.Linear(8, 16), nn.Linear(16, 2), nn.Linear(16, 2)
        self.huge = huge

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = torch.tanh(self.trunk(x))
        return {"huge": self.huge * self.head_a(h).pow(2).mean(), "plain": (self.head_b(h) - 1).pow(2).mean()}


HUGE_TERM_MODEL = """
    HUGE = 1e19

    def losses(model, x):
        out = model(x)
        return {"a": HUGE * out[:, 0].pow(2).mean(), "b": (out[:, 1] - 1).pow(2).mean()}
"""


def assert_every_figure_drawn(folder: Path) -> None:
    page = (folder / "report.html").read_text()
    assert (folder / "summary.json").is_file() and (folder / "alpha.png").is_file()
    assert "could not be drawn" not in page


def test_a_monitor_with_a_norm_ratio_past_1e16_writes_its_report_and_every_figure(tmp_path):
    """Regression: the alpha figure's logit axis reached 1 - 1e-20 == 1.0 and matplotlib raised LinAlgError out of
    Monitor.close(), with no summary or report written; `lossdiag report` on the records failed the same way."""
    torch.manual_seed(0)
    model = TwoTerms(1e19)
    monitor = Monitor(model, out=tmp_path, every=1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    for seed in range(3):
        optimizer.zero_grad()
        monitor.combine(model(batch(seed))).backward()
        optimizer.step()
    summary = monitor.close()
    norms = summary["per_term"]
    assert norms["huge"]["grad_norm"] / norms["plain"]["grad_norm"] > 1e16
    assert summary["suggested_alpha"] < 1e-15
    assert_every_figure_drawn(tmp_path)
    result = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert result.exit_code == 0, result.stderr
    assert_every_figure_drawn(tmp_path)


def test_the_profile_with_a_norm_ratio_past_1e16_writes_its_report_and_every_figure(tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["profile", str(model_file(tmp_path, HUGE_TERM_MODEL)), "--steps", "4",
                                       "--no-checks", "--no-verify", "--out", str(out)])
    assert result.exit_code == 0, result.stderr
    assert_every_figure_drawn(out)


def test_a_figure_matplotlib_cannot_draw_is_left_out_with_the_reason():
    """Any figure that fails to draw becomes a note on the page (here the logit axis the alpha figure once used,
    reaching 1e-20), never an error that loses the summary and the report."""
    def unreachable_logit_axis() -> Figure:
        ax = Figure().add_subplot()
        ax.set_xscale("logit")
        ax.plot([1e-20, 0.5, 1 - 1e-15], [0.0, 0.5, 1.0])
        ax.axhline(0.5)
        return ax.get_figure()

    figure = drawn_figure("alpha", "Alpha curve", "caption", unreachable_logit_axis)
    assert figure.png is None and figure.note == "could not be drawn: LinAlgError: Singular matrix"
