"""A VAE profiled as a user would: `opposed` names only the term that gets worse (KL, rising from near 0), never the
reconstruction that falls beside it in a clearly conflicting pair, and `progress` writes null for KL, whose relative
drop from near 0 means nothing (the displays say 'from ~0')."""
from __future__ import annotations

import json
import pytest

from cli_helpers import invoke
from paths import FIXTURES


@pytest.fixture(scope="module")
def profiled(tmp_path_factory):
    out = tmp_path_factory.mktemp("vae") / "run"
    completed = invoke("profile", FIXTURES / "outcome_vae.py", "--steps", "20", "--check-steps", "40", "--out", out)
    assert completed.returncode == 0, completed.stderr
    return out, completed.stdout, json.loads((out / "summary.json").read_text())


def test_opposed_names_only_the_term_that_gets_worse(profiled):
    _, _, summary = profiled
    assert any(set(pair["terms"]) == {"reconstruction", "kl"} and pair["cosine_median"] < -0.5
               for pair in summary["conflict"]), "the pair's gradients clearly oppose: the case this test is about"
    reconstruction, kl = summary["situations"]["reconstruction"], summary["situations"]["kl"]
    assert reconstruction["combined"] < reconstruction["start"], "reconstruction falls under the weights in force"
    assert kl["combined"] > kl["start"]
    assert summary["opposed"] == ["kl"]
    assert reconstruction["name"] != "opposed"
    assert [f["terms"] for f in summary["findings"] if f["code"] == "opposed"] == [["kl"]]
    assert summary["recommendation"] != "reweight"


def test_progress_is_null_where_the_relative_drop_means_nothing(profiled):
    out, stdout, summary = profiled
    measured = summary["in_force"]["progress"]
    assert abs(measured["kl"]) > 10, "KL starts near 0: its relative drop is past 1000%"
    assert summary["progress"]["kl"] is None and summary["per_term"]["kl"]["progress"] is None
    assert summary["progress"]["reconstruction"] == pytest.approx(measured["reconstruction"])
    assert 0 < summary["progress"]["reconstruction"] < 1
    assert "from ~0" in stdout
    rebuilt = invoke("report", out)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert json.loads((out / "summary.json").read_text())["progress"]["kl"] is None
