"""The options of `profile`, `check` and `sweep`, and how they resolve against YAML: only those given on the command
line override it."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

import click

from lossdiag.errors import SpecError

DEFAULT_OUT = "lossdiag-report"
DEFAULT_SWEEP_OUT = "lossdiag-sweep"


class WholeNumber(click.ParamType):
    """click's integer, refusing a number too long for any option in a short line that echoes a cut value."""

    name = "integer"

    def convert(self, value: Any, param: Any, ctx: Any) -> int:
        if isinstance(value, int):
            return value
        from lossdiag.config import oversized_number
        from lossdiag.report.text import term_text

        text = str(value).strip()
        if oversized_number(text):
            self.fail(oversized_number(text), param, ctx)
        try:
            return int(text)
        except ValueError:
            self.fail(f"{term_text(text, 40)!r} is not a valid integer", param, ctx)


WHOLE_NUMBER = WholeNumber()


def run_options(command: Callable) -> Callable:
    """The options `profile` and `check` share; only those given on the command line override YAML."""
    options = [
        click.option("--steps", type=WHOLE_NUMBER, default=None, help="Training steps to profile [200]."),
        click.option("--check-steps", type=WHOLE_NUMBER, default=None, help="Steps of each single-term check and of each run that verifies a candidate: the horizon the advice is judged at; set it near where your losses level off [100]."),
        click.option("--every", type=WHOLE_NUMBER, default=None, help="Record per-term gradients every N steps [1]."),
        click.option("--out", type=click.Path(file_okay=False), default=None,
                     help=f"Output folder [./{DEFAULT_OUT}]."),
        click.option("--refine", type=WHOLE_NUMBER, default=None, help="Re-profile N times under the suggestion [0]."),
        click.option("--device", default=None, help="Move the model and batches to DEV (e.g. cuda)."),
        click.option("--weights", default=None,
                     help="Weights to profile with: name=0.5,other=0.5 (the terms not named keep the model file's)."),
        click.option("--target", "target_shares", default=None,
                     help="Share of the shared gradient each term should hold: name=0.7,other=0.3 [equal]."),
        click.option("--no-verify", is_flag=True, default=None,
                     help="Skip the runs that verify candidate weights from the same start."),
        click.option("--main", default=None,
                     help="Terms you care most about (a,b): a recommendation never makes them worse."),
        click.option("--seed", type=WHOLE_NUMBER, default=None, help="Seed set before each run [0]."),
        click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
                     help="YAML options (default: lossdiag.yaml beside the model file)."),
        click.option("--no-checks", is_flag=True, default=None, help="Skip the single-term checks."),
        click.option("--jobs", type=WHOLE_NUMBER, default=None,
                     help="Runs from the same start (checks, candidates) trained at once, in processes [every core]."),
        click.option("--strict", is_flag=True, default=None, help="Exit 1 on warnings too."),
        click.option("--json", "as_json", is_flag=True, default=None, help="Print summary.json to stdout."),
        click.option("--debug", is_flag=True, default=None, help="Show tracebacks."),
    ]
    for option in reversed(options):
        command = option(command)
    return click.argument("model_py", type=click.Path(dir_okay=False))(command)


def resolve_options(model_py: str, config_file: str | None, given: dict, default_out: str = DEFAULT_OUT) -> Any:
    from lossdiag.config import load

    if not Path(model_py).is_file():
        raise SpecError(f"{model_py}: no such model file")
    if config_file is not None and not Path(config_file).is_file():
        raise SpecError(f"{config_file}: no such config file")
    cli_options = {k: v for k, v in given.items() if v is not None}
    config = load(Path(config_file) if config_file else None, Path(model_py), cli_options)
    return config if config.out else dataclasses.replace(config, out=default_out)
