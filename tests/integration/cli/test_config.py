"""Options from YAML: lossdiag.yaml beside the model file, --config, precedence and errors."""
import json
import shutil

import pytest

from cli_helpers import invoke
from lossdiag.config import Config, resolve
from lossdiag.errors import SpecError


@pytest.fixture
def model_dir(fixtures, tmp_path):
    shutil.copy(fixtures / "healthy_three.py", tmp_path / "model.py")
    return tmp_path


def _summary(folder):
    return json.loads((folder / "summary.json").read_text())


def test_yaml_beside_the_model_is_read_and_the_command_line_wins(model_dir):
    (model_dir / "lossdiag.yaml").write_text("steps: 7\nevery: 3\nno_checks: true\ndominance_threshold: 0.9\n")
    completed = invoke("profile", model_dir / "model.py", "--every", "2", "--out", model_dir / "out")
    assert completed.returncode == 0, completed.stderr
    summary = _summary(model_dir / "out")
    assert summary["steps"] == 7 and summary["config"]["every"] == 2
    assert summary["dominance_threshold"] == 0.9


def test_config_option_replaces_the_file_beside_the_model(model_dir):
    (model_dir / "lossdiag.yaml").write_text("steps: 7\nno_checks: true\n")
    (model_dir / "other.yaml").write_text("steps: 4\nno-checks: true\nout: elsewhere\n")
    completed = invoke("profile", model_dir / "model.py", "--config", model_dir / "other.yaml", cwd=model_dir)
    assert completed.returncode == 0, completed.stderr
    assert _summary(model_dir / "elsewhere")["steps"] == 4


@pytest.mark.parametrize("text, expected", [
    ("stesp: 10\n", "unknown option 'stesp' (did you mean 'steps'?)"),
    ("share_tolerance: 0.2\n", "unknown option 'share_tolerance'"),
    ("steps: ten\n", "'steps' must be an integer, got 'ten'"),
    ("every: 0\n", "'every' must be at least 1"),
    ("dominance_threshold: 2\n", "'dominance_threshold' must be between 0 and 1"),
    ("steps: [1\n", "not valid YAML"),
    ("- steps\n", "a config must be a mapping"),
    ("weights: {task_0: big}\n", "weight of 'task_0' must be a finite number"),
    ("steps: !!python/object/apply:os.system ['true']\n", "not valid YAML"),
])
def test_bad_yaml_is_a_usage_error_naming_the_key(model_dir, text, expected):
    (model_dir / "lossdiag.yaml").write_text(text)
    completed = invoke("profile", model_dir / "model.py", "--out", model_dir / "out")
    assert completed.returncode == 2
    assert "lossdiag.yaml" in completed.stderr and expected in completed.stderr
    assert "Traceback" not in completed.stderr and len(completed.stderr.strip().splitlines()) == 1


def test_weights_naming_an_unknown_term_are_rejected(model_dir):
    completed = invoke("profile", model_dir / "model.py", "--weights", "task_9=1", "--out", model_dir / "out")
    assert completed.returncode == 2 and "unknown term 'task_9'" in completed.stderr


def test_resolve_keeps_defaults_for_what_is_not_given():
    config = resolve({"refine": 2, "weights": "a=0.25,b=0.75"})
    assert config.refine == 2 and config.weights == {"a": 0.25, "b": 0.75}
    assert config.steps == Config().steps
    with pytest.raises(SpecError, match="must look like"):
        resolve({"weights": "a:1"})


def test_negative_weights_are_rejected(model_dir):
    completed = invoke("profile", model_dir / "model.py", "--weights", "task_0=-1", "--out", model_dir / "out")
    assert completed.returncode == 2 and "must be 0 or more" in completed.stderr
