"""The report at 30 and 50 terms: every legend entry inside its figure, no matplotlib warning, the page under 2 MB."""
from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from lossdiag.report import figures


def many_term_records(count: int, steps: int = 60) -> list[dict]:
    """A run's records for `count` terms on a shared trunk, with checks, as a Monitor or a profile writes them."""
    rng = random.Random(count)
    terms = [f"term_{k:02d}_auxiliary_head" for k in range(count)]
    modules = ["trunk.0", "trunk.2"]
    records = [{"kind": "meta", "step": 0, "lossdiag_version": "0.1.0", "torch_version": "2", "source": "model.py",
                "terms": terms, "weights": {t: 1.0 for t in terms}, "scope": "all", "config": {"steps": steps},
                "shared_parameters": {"count": 4, "numel": 1000, "names": ["a", "b", "c", "d"]},
                "shared_modules": modules, "term_parameters": {t: 6 for t in terms},
                "term_shared_parameters": {t: 4 for t in terms}}]
    for step in range(steps):
        norms = {t: (k + 1) * rng.uniform(0.5, 1.5) for k, t in enumerate(terms)}
        gram = [[norms[a] * norms[b] * (1.0 if a == b else rng.uniform(-0.3, 0.3)) for b in terms] for a in terms]
        records.append({"kind": "step", "step": step,
                        "loss": {t: math.exp(-step / 40) * (k + 1) * rng.uniform(0.9, 1.1) for k, t in enumerate(terms)},
                        "grad": {"weights": {t: 1.0 for t in terms}, "norms": norms, "norms_all": norms, "gram": gram,
                                 "layers": {m: {t: norms[t] / 2 for t in terms} for m in modules}}})
    records.append({"kind": "end", "step": steps - 1, "steps": steps})
    records += [{"kind": "check", "step": k, "term": t, "status": "pass", "code": None, "reason": None, "steps": 30,
                 "losses": [math.exp(-i / 10) for i in range(30)], "loss_start": 1.0, "loss_end": 0.05,
                 "relative_drop": 0.95} for k, t in enumerate(terms)]
    return records


def test_a_30_term_legend_holds_every_term_inside_the_figure():
    terms = [f"term_{k:02d}_auxiliary_head" for k in range(30)]
    losses = np.exp(-np.arange(40)[:, None] / 20) * np.arange(1, 31)
    figure = figures.loss_curves(np.arange(40), losses, terms)
    FigureCanvasAgg(figure).draw()
    legend = figure.axes[0].get_legend()
    assert [text.get_text() for text in legend.get_texts()] == terms
    inside = figure.bbox
    box = legend.get_window_extent()
    assert box.x0 >= inside.x0 and box.y0 >= inside.y0 and box.x1 <= inside.x1 and box.y1 <= inside.y1
    assert len({tuple(sorted(figures.style(k).items())) for k in range(64)}) == 64


@pytest.mark.slow
def test_50_terms_give_a_page_under_2_mb_without_a_warning(tmp_path):
    (tmp_path / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in many_term_records(50)))
    env = {key: value for key, value in os.environ.items() if key != "PYTHONWARNINGS"}
    completed = subprocess.run([sys.executable, "-m", "lossdiag", "report", str(tmp_path)], env=env,
                               capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert completed.returncode == 0, completed.stderr
    assert completed.stderr == ""
    assert (tmp_path / "report.html").stat().st_size < 2_000_000
    assert {"losses.png", "shares.png", "cosines.png", "checks.png", "layers.png"} <= {
        p.name for p in tmp_path.iterdir()}
