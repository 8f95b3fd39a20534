"""Every example in notebooks_examples/ runs as shipped: each notebook executed by a real kernel, each script run
(under torchrun on two processes when it starts a process group), each model file profiled by the CLI."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from paths import EXAMPLES

OPTIONAL = ("lightning", "transformers", "accelerate", "tensorboard", "wandb")
OUTPUTS = shutil.ignore_patterns("lossdiag-*", "tensorboard-runs", "hf-output", "lightning_logs", "__pycache__")


def _copy_of_examples(tmp_path: Path) -> Path:
    """The examples folder copied, so that what they write lands in tmp_path."""
    folder = tmp_path / "examples"
    shutil.copytree(EXAMPLES, folder, ignore=OUTPUTS)
    return folder


def _skip_without_what_it_imports(code: str) -> None:
    for name in OPTIONAL:
        if re.search(rf"^\s*(import|from) {name}\b", code, flags=re.MULTILINE):
            pytest.importorskip(name, reason=f"the example imports {name}, which is not installed")


@pytest.mark.parametrize("notebook", sorted(p.name for p in EXAMPLES.glob("*.ipynb")))
def test_notebook_executes(tmp_path, notebook):
    nbformat = pytest.importorskip("nbformat", reason="nbformat is not installed (the dev extra)")
    nbclient = pytest.importorskip("nbclient", reason="nbclient is not installed (the dev extra)")
    pytest.importorskip("ipykernel", reason="ipykernel is not installed (the dev extra)")
    folder = _copy_of_examples(tmp_path)
    nb = nbformat.read(folder / notebook, as_version=4)
    _skip_without_what_it_imports("\n".join(cell.source for cell in nb.cells if cell.cell_type == "code"))
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(folder)}})
    client.execute()
    errors = [output for cell in nb.cells for output in cell.get("outputs", []) if output.output_type == "error"]
    assert not errors
    assert all(cell.execution_count for cell in nb.cells if cell.cell_type == "code")
    assert list(folder.glob("*/*.html")), "the notebook wrote no page (report.html, sweep.html)"


def _is_model_file(path: Path) -> bool:
    return re.search(r"^def build_model\(", path.read_text(), flags=re.MULTILINE) is not None


@pytest.mark.parametrize("script", sorted(p.name for p in EXAMPLES.glob("*.py") if not _is_model_file(p)))
def test_script_runs(tmp_path, script):
    folder = _copy_of_examples(tmp_path)
    code = (folder / script).read_text()
    _skip_without_what_it_imports(code)
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command = [sys.executable, *(launcher if "init_process_group(" in code else []), script]
    completed = subprocess.run(command, cwd=folder, env={**os.environ, "OMP_NUM_THREADS": "1"},
                               capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    assert list(folder.glob("*/*.html")), "the script wrote no page (report.html, sweep.html)"


@pytest.mark.parametrize("model_file", sorted(p.name for p in EXAMPLES.glob("*.py") if _is_model_file(p)))
def test_model_file_profiles(tmp_path, model_file):
    folder = _copy_of_examples(tmp_path)
    completed = subprocess.run([sys.executable, "-m", "lossdiag", "profile", model_file, "--steps", "30",
                                "--no-checks", "--out", str(tmp_path / "out")],
                               cwd=folder, capture_output=True, text=True, timeout=300)
    assert completed.returncode in (0, 1), completed.stderr
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["steps"] == 30
