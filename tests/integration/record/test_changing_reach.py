"""Which terms share parameters follows every recorded step (issue 16, item 1): an auxiliary head on
`trunk.detach()` for its first step reaches no shared parameter then, and the trunk from the next step on. Its
shares, cosines and logger scalars on every later step, and the summary's medians, equal plain autograd, in the
Monitor and in the profile; the header's description is joined by a 'layout' record naming the trunk."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import lossdiag
from lossdiag import Monitor
from lossdiag.record.stream import read_records
from lossdiag.report.scalars import step_scalars
from reference import assert_matches, shares_and_cosines, step_reference

STEPS = 6
WEIGHTS = {"main": 1.0, "aux": 0.3}
TRUNK = ["trunk.0.weight", "trunk.0.bias", "trunk.2.weight", "trunk.2.bias"]


class WarmUp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh())
        self.main = nn.Linear(8, 1)
        self.aux = nn.Linear(8, 3)


def losses(model: WarmUp, batch: tuple) -> dict[str, torch.Tensor]:
    """The auxiliary head reads the trunk through .detach() while the batch says it warms up."""
    x, target, labels, warming = batch
    h = model.trunk(x)
    return {"main": F.mse_loss(model.main(h).squeeze(-1), target),
            "aux": F.cross_entropy(model.aux(h.detach() if warming else h), labels)}


def batches() -> list[tuple]:
    g = torch.Generator().manual_seed(3)
    return [(torch.randn(8, 4, generator=g), torch.randn(8, generator=g), torch.randint(0, 3, (8,), generator=g),
             step == 0) for step in range(STEPS)]


def optimizer(parameters) -> torch.optim.Optimizer:
    return torch.optim.SGD(parameters, lr=0.1)


def plain_run(model: nn.Module) -> list[dict]:
    """Brute-force numbers of each step of a plain loop (total.backward(), SGD)."""
    opt = optimizer(model.parameters())
    expected = []
    for batch in batches():
        terms = losses(model, batch)
        expected.append(step_reference(terms, model))
        opt.zero_grad()
        sum(WEIGHTS[t] * v for t, v in terms.items()).backward()
        opt.step()
    return expected


def expected_summary(expected: list[dict]) -> tuple[dict[str, float], float]:
    """Dominance from the medians of each term's weighted norm over the steps on which it reached shared
    parameters, and the median cosine between the two terms."""
    medians = {t: float(np.median([WEIGHTS[t] * e["norms"][t] for e in expected if e["reaches_shared"][t]]))
               for t in WEIGHTS}
    total = sum(medians.values())
    cosines = [shares_and_cosines(e, WEIGHTS)[1].get(("main", "aux")) for e in expected]
    return {t: m / total for t, m in medians.items()}, float(np.median([c for c in cosines if c is not None]))


def assert_step_scalars(scalars: dict, expected: dict, step: int) -> None:
    shares, cosines = shares_and_cosines(expected, WEIGHTS)
    for term, share in shares.items():
        assert scalars[f"lossdiag/{term}/share"] == pytest.approx(share, rel=1e-6, abs=1e-12), (step, term)
    cosine = cosines.get(("main", "aux"))
    assert ("lossdiag/cosine/main~aux" in scalars) == (cosine is not None), step
    if cosine is not None:
        assert scalars["lossdiag/cosine/main~aux"] == pytest.approx(cosine, abs=1e-6), step


def assert_layout(records: list[dict]) -> None:
    header = records[0]
    assert header["shared_parameters"]["names"] == [] and header["term_shared_parameters"]["aux"] == 0
    (layout,) = [r for r in records if r["kind"] == "layout"]
    assert layout["step"] == 1 and layout["shared_parameters"]["names"] == TRUNK
    assert layout["shared_modules"] == ["trunk.0", "trunk.2"]
    assert layout["term_shared_parameters"] == {"main": 4, "aux": 4}


def assert_summary(summary: dict, expected: list[dict]) -> None:
    dominance, cosine = expected_summary(expected)
    assert summary["shared_parameters"]["names"] == TRUNK
    assert summary["per_term"]["aux"]["shared_parameters"] == 4
    for term, share in dominance.items():
        assert summary["dominance"][term] == pytest.approx(share, rel=1e-6), term
    (pair,) = summary["conflict"]
    assert pair["terms"] == ["main", "aux"] and pair["cosine_median"] == pytest.approx(cosine, abs=1e-6)
    assert 0 < summary["suggested_weights"]["aux"] < 1
    assert set(summary["layers"]) == {"trunk.0", "trunk.2"}
    assert all(math.isfinite(share) and share > 0 for row in summary["layers"].values() for share in row.values())


def test_monitor_follows_an_aux_head_detached_for_its_first_step(tmp_path):
    torch.manual_seed(0)
    model = WarmUp()
    expected = plain_run(copy.deepcopy(model))
    logged: dict[int, dict] = {}
    monitor = Monitor(model, out=tmp_path, every=1, log=lambda scalars, step: logged.__setitem__(step, scalars))
    opt = optimizer(model.parameters())
    for batch in batches():
        opt.zero_grad()
        monitor.combine(losses(model, batch), WEIGHTS).backward()
        opt.step()
    summary = monitor.close()
    records = read_records(tmp_path / "records.jsonl")[0]
    steps = [r for r in records if r["kind"] == "step"]
    assert sorted(logged) == list(range(STEPS))
    for step, (record, reference) in enumerate(zip(steps, expected)):
        assert_matches(record["grad"], reference, f"step {step}")
        assert_step_scalars(logged[step], reference, step)
    assert_layout(records)
    assert_summary(summary, expected)


def test_profile_follows_an_aux_head_detached_for_its_first_step():
    torch.manual_seed(0)
    model = WarmUp()
    expected = plain_run(copy.deepcopy(model))
    result = lossdiag.profile(model, batches(), losses, weights=WEIGHTS, make_optimizer=optimizer, steps=STEPS,
                              every=1, check_steps=0, progress=False)
    steps = [r for r in result.records if r["kind"] == "step"]
    series = result.diagnosis.dominance.share_series
    for step, (record, reference) in enumerate(zip(steps, expected)):
        assert_matches(record["grad"], reference, f"step {step}")
        assert_step_scalars(step_scalars(record, []), reference, step)
        shares, _ = shares_and_cosines(reference, WEIGHTS)
        if step > 0:
            assert series[step] == pytest.approx([shares["main"], shares["aux"]], rel=1e-6), step
    assert_layout(result.records)
    assert_summary(result.summary, expected)
