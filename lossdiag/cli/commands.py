"""The command line (CONTRACT section 2): parse, call the library, render, map the verdict to an exit code."""
from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Any, Callable

import click

from lossdiag._version import __version__
from lossdiag.cli.errors import EXIT_FINDINGS, EXIT_OK, OneLineErrors, exit_code, guarded
from lossdiag.cli.options import DEFAULT_SWEEP_OUT, WHOLE_NUMBER, resolve_options, run_options
from lossdiag.errors import SpecError

CHECK_IGNORES = ("steps", "every", "refine", "no_checks")


def _run_and_render(runner: Callable, model_py: str, config_file: str | None, given: dict) -> None:
    """Resolve options, run `runner(spec, config)`, print the summary (text or --json), exit by its findings."""
    from lossdiag.report.terminal import render
    from lossdiag.train.spec import load_model_file

    config = resolve_options(model_py, config_file, given)
    result = runner(load_model_file(model_py), config)
    if config.json:
        click.echo(json.dumps(result.summary, indent=2, allow_nan=False))
    else:
        click.echo(render(result.summary, model_py, config.out), nl=False)
    sys.exit(exit_code(result.summary, config.strict))


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lossdiag")
def main() -> None:
    """Tell why one term of a PyTorch loss drowns the others, and what to do about it."""


@main.command()
@run_options
@guarded
def profile(model_py: str, config_file: str | None, as_json: bool | None, debug: bool | None, **given: Any) -> None:
    """Profile MODEL_PY: per-term gradients on shared parameters, dominance, conflict, a suggestion."""
    from lossdiag.api import run_profile

    _run_and_render(functools.partial(run_profile, model_path=model_py), model_py, config_file,
                    {**given, "json": as_json})


@main.command()
@run_options
@guarded
def check(model_py: str, config_file: str | None, as_json: bool | None, debug: bool | None, **given: Any) -> None:
    """Only the gradient sanity and single-term checks on MODEL_PY: a fast gate for CI.

    A short recorded run (sanity_steps, YAML) finds non-finite, detached and zero gradients; then each term is
    trained alone for --check-steps. --steps, --every, --refine and --no-checks do not apply here: given on the
    command line they are a usage error (in a YAML file shared with `profile` they are left to `profile`).
    """
    from lossdiag.api import run_check

    given_here = [name for name in CHECK_IGNORES if given.get(name) is not None]
    if given_here:
        option = "--" + given_here[0].replace("_", "-")
        raise SpecError(f"{option} does not apply to `lossdiag check`, which records sanity_steps (YAML) steps and "
                        f"then trains each term alone for --check-steps; use `lossdiag profile` for {option}")
    _run_and_render(functools.partial(run_check, model_path=model_py), model_py, config_file,
                    {**given, "json": as_json})


@main.command()
@click.argument("run_dir", type=click.Path())
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Folder for report.html, the PNGs and summary.json [RUN_DIR].")
@click.option("--debug", is_flag=True, default=None, help="Show tracebacks.")
@guarded
def report(run_dir: str, out: str | None, debug: bool | None) -> None:
    """Rebuild report.html, the PNG figures and summary.json from RUN_DIR/records.jsonl alone.

    Works on a finished profile, a Monitor run, or a run that was killed (a torn last line is skipped).
    Exits 0 once the page is written, whatever it finds.
    """
    from lossdiag.config import check_out_folder
    from lossdiag.advise.diagnose import diagnose
    from lossdiag.record.stream import RECORDS, read_records
    from lossdiag.report.outputs import REPORT, write_outputs
    from lossdiag.report.summary import build_summary
    from lossdiag.report.terminal import render
    from lossdiag.report.text import safe

    folder = Path(run_dir)
    path = folder / RECORDS
    if not folder.is_dir():
        raise SpecError(f"{run_dir}: no such folder")
    target = Path(check_out_folder(out)) if out is not None else folder
    if _rebuild_sweep(folder, target, debug) and not path.is_file():
        return
    if not path.is_file():
        raise SpecError(f"{path}: no such file; point at the folder a profile or a Monitor wrote")
    try:
        records, torn = read_records(path)
        diagnosis = diagnose(records, torn)
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        if debug:
            raise
        raise SpecError(f"{path}: not lossdiag records ({exc})") from None
    summary = build_summary(diagnosis)
    write_outputs(target, diagnosis, summary)
    click.echo(render(summary, None, str(target)), nl=False)
    click.echo(f"report: {safe(target / REPORT)}")


def _rebuild_sweep(folder: Path, target: Path, debug: bool | None) -> bool:
    """Rebuild sweep.json, sweep.png and sweep.html from folder/sweep_records.jsonl, if there is one."""
    from lossdiag.record.stream import SWEEP_RECORDS, finite_or_none, read_records
    from lossdiag.report.sweep_outputs import SWEEP_PAGE, write_sweep_outputs
    from lossdiag.report.sweep_terminal import render_sweep
    from lossdiag.report.text import safe
    from lossdiag.sweep.records import SweepData

    path = folder / SWEEP_RECORDS
    if not path.is_file():
        return False
    try:
        records, torn = read_records(path)
        data = SweepData.from_records(records, torn)
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        if debug:
            raise
        raise SpecError(f"{path}: not lossdiag sweep records ({exc})") from None
    sweep = finite_or_none(data.to_json())
    write_sweep_outputs(target, sweep, data.meta["config"])
    click.echo(render_sweep(sweep, None, str(target)), nl=False)
    click.echo(f"sweep page: {safe(target / SWEEP_PAGE)}")
    return True


@main.command()
@click.argument("model_py", type=click.Path(dir_okay=False))
@click.option("--points", type=WHOLE_NUMBER, default=None, help="Points of the grid [9].")
@click.option("--sweep-steps", type=WHOLE_NUMBER, default=None, help="Training steps of each point [200].")
@click.option("--metric", default=None, help="Choose the point by this metric of validate(model).")
@click.option("--jobs", type=WHOLE_NUMBER, default=None, help="Points trained at once, in processes [every core].")
@click.option("--steps", type=WHOLE_NUMBER, default=None, help="Steps of the profile that centres the grid [200].")
@click.option("--every", type=WHOLE_NUMBER, default=None, help="Record per-term gradients every N steps [1].")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help=f"Output folder [./{DEFAULT_SWEEP_OUT}].")
@click.option("--weights", default=None, help="Weights in force: name=0.5,other=0.5.")
@click.option("--main", default=None, help="Terms you care most about (a,b): the point chosen never makes them worse.")
@click.option("--seed", type=WHOLE_NUMBER, default=None, help="Seed set before each run [0].")
@click.option("--device", default=None, help="Move the model and batches to DEV (e.g. cuda).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="YAML options (default: lossdiag.yaml beside the model file).")
@click.option("--json", "as_json", is_flag=True, default=None, help="Print sweep.json to stdout.")
@click.option("--debug", is_flag=True, default=None, help="Show tracebacks.")
@guarded
def sweep(model_py: str, config_file: str | None, as_json: bool | None, debug: bool | None, **given: Any) -> None:
    """Cross-validate the weights of MODEL_PY: short runs on a log-scale grid around the suggestion.

    Every point trains from the same start on the same batches for --sweep-steps steps and is scored by each
    term's loss at its end on the evaluation batches and by validate(model)'s metrics. The recommended point is
    the best by --metric, else the one the profile's rule prefers over the weights in force (the weights in force
    when none qualifies). Exits 0 with a recommendation, 1 when no point can be compared.
    """
    from lossdiag.report.sweep_outputs import SWEEP_PAGE
    from lossdiag.report.sweep_terminal import render_sweep
    from lossdiag.report.text import safe
    from lossdiag.train.spec import load_model_file
    from lossdiag.sweep.api import run_sweep_result

    config = resolve_options(model_py, config_file, {**given, "json": as_json}, DEFAULT_SWEEP_OUT)
    result = run_sweep_result(load_model_file(model_py), config, model_py)
    if config.json:
        click.echo(json.dumps(result.summary, indent=2, allow_nan=False))
    else:
        click.echo(render_sweep(result.summary, model_py, config.out), nl=False)
        click.echo(f"sweep page: {safe(Path(config.out) / SWEEP_PAGE)}")
    sys.exit(EXIT_OK if result.data.choice.index is not None else EXIT_FINDINGS)
