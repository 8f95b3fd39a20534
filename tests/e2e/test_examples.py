"""The examples in notebooks_examples/ run as shipped."""
import json
import os

from lossdiag import ProfileResult


def test_notebook_cells_run_and_show_the_report_inline(examples, tmp_path):
    notebook = json.loads((examples / "profile_in_a_notebook.ipynb").read_text())
    code = ["".join(cell["source"]) for cell in notebook["cells"] if cell["cell_type"] == "code"]
    namespace: dict = {}
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        for cell in code:
            exec(compile(cell, "notebook-cell", "exec"), namespace)
    finally:
        os.chdir(cwd)
    result = namespace["result"]
    assert isinstance(result, ProfileResult)
    fragment = result._repr_html_()
    assert "<iframe" not in fragment and "regression" in fragment
    assert (tmp_path / "lossdiag-notebook" / "report.html").is_file()
