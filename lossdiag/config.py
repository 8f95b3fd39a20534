"""Every option and threshold with its default, and the YAML overlay on top of them."""
from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from pathlib import Path
from typing import Any, Mapping

from lossdiag.errors import SpecError


@dataclasses.dataclass(frozen=True)
class Config:
    """Resolved options of a profile: code defaults, then YAML, then the command line."""

    steps: int = 200
    check_steps: int = 100
    every: int = 1
    out: typing.Optional[str] = None
    refine: int = 0
    device: typing.Optional[str] = None
    weights: typing.Optional[typing.Dict[str, float]] = None
    no_checks: bool = False
    strict: bool = False
    json: bool = False
    seed: int = 0
    dominance_threshold: float = 0.8
    conflict_cosine: float = -0.5
    sanity_steps: int = 20
    check_min_drop: float = 0.05
    check_noise_z: float = 3.0
    check_max_rise: float = 0.5
    starved_min_drop: float = 0.2
    starved_ratio: float = 0.3
    probe_batches: int = 8
    target_shares: typing.Optional[typing.Dict[str, float]] = None
    no_verify: bool = False
    verify_rounds: int = 2
    points: int = 9
    sweep_steps: int = 200
    metric: typing.Optional[str] = None
    jobs: typing.Optional[int] = None
    sweep_tolerance: float = 0.05

    def to_dict(self) -> dict[str, Any]:
        """The configuration as plain data, for summary.json and the report."""
        return dataclasses.asdict(self)


FIELDS = {f.name: f for f in dataclasses.fields(Config)}
_POSITIVE = {"steps", "every", "sanity_steps", "probe_batches", "points", "sweep_steps", "jobs"}
_POSITIVE_NUMBER = {"check_noise_z", "check_max_rise"}
_NON_NEGATIVE = {"check_steps", "refine", "seed", "verify_rounds"}
_UNIT_INTERVAL = {"dominance_threshold", "check_min_drop", "sweep_tolerance",
                  "starved_min_drop", "starved_ratio"}
_COSINE = {"conflict_cosine"}


def _expected_type(name: str) -> Any:
    hint = typing.get_type_hints(Config)[name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if typing.get_origin(hint) is typing.Union else hint


def _check_value(name: str, value: Any, source: str) -> Any:
    if value is None and FIELDS[name].default is None:
        return None
    expected = _expected_type(name)
    where = f"{source}: " if source else ""
    if expected is bool:
        if not isinstance(value, bool):
            raise SpecError(f"{where}'{name}' must be true or false, got {value!r}")
        return value
    if expected is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpecError(f"{where}'{name}' must be an integer, got {value!r}")
    elif expected is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise SpecError(f"{where}'{name}' must be a finite number, got {value!r}")
        value = float(value)
    elif expected is str:
        if not isinstance(value, str):
            raise SpecError(f"{where}'{name}' must be a string, got {value!r}")
    else:
        value = parse_weights(value, f"{where}'{name}'")
        if name == "target_shares" and not all(share > 0 for share in value.values()):
            raise SpecError(f"{where}'{name}': every share must be more than 0, got {value!r}")
    if name in _POSITIVE and value < 1:
        raise SpecError(f"{where}'{name}' must be at least 1, got {value!r}")
    if name in _POSITIVE_NUMBER and value <= 0:
        raise SpecError(f"{where}'{name}' must be more than 0, got {value!r}")
    if name in _NON_NEGATIVE and value < 0:
        raise SpecError(f"{where}'{name}' must be 0 or more, got {value!r}")
    if name in _UNIT_INTERVAL and not 0.0 < value < 1.0:
        raise SpecError(f"{where}'{name}' must be between 0 and 1, got {value!r}")
    if name in _COSINE and not -1.0 < value < 0.0:
        raise SpecError(f"{where}'{name}' must be between -1 and 0, got {value!r}")
    return value


def parse_weights(value: Any, what: str = "weights") -> dict[str, float]:
    """Read term weights from a mapping or from 'name=value,name=value' text."""
    if isinstance(value, str):
        pairs = [p for p in value.split(",") if p.strip()]
        parsed: dict[str, Any] = {}
        for pair in pairs:
            name, sep, number = pair.partition("=")
            if not sep or not name.strip():
                raise SpecError(f"{what} must look like 'name=0.5,other=0.5', got {value!r}")
            try:
                parsed[name.strip()] = float(number)
            except ValueError:
                raise SpecError(f"{what}: weight of '{name.strip()}' must be a number, got {number!r}") from None
        value = parsed
    if not isinstance(value, Mapping) or not value:
        raise SpecError(f"{what} must be a mapping of term name to number, got {value!r}")
    weights = {}
    for name, weight in value.items():
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
            raise SpecError(f"{what}: weight of '{name}' must be a finite number, got {weight!r}")
        if weight < 0:
            raise SpecError(f"{what}: weight of '{name}' must be 0 or more (a negative weight maximises the term), "
                            f"got {weight!r}")
        weights[str(name)] = float(weight)
    return weights


def _unknown_key_error(key: str, source: str) -> SpecError:
    close = difflib.get_close_matches(key, list(FIELDS), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    where = f"{source}: " if source else ""
    return SpecError(f"{where}unknown option '{key}'{hint}")


def resolve(overrides: Mapping[str, Any], base: Config | None = None, source: str = "") -> Config:
    """Overlay options on a config, rejecting unknown keys (with the closest valid name) and wrong types."""
    base = base or Config()
    checked = {}
    for key, value in overrides.items():
        name = str(key).replace("-", "_")
        if name not in FIELDS:
            raise _unknown_key_error(str(key), source)
        checked[name] = _check_value(name, value, source)
    return dataclasses.replace(base, **checked)


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML config file (safe loading) into a mapping of options."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise SpecError(f"{path}: cannot read config ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        raise SpecError(f"{path}: not valid YAML{line}: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SpecError(f"{path}: a config must be a mapping of option to value, got {type(data).__name__}")
    return data


def load(config_path: Path | None, model_path: Path | None, cli_options: Mapping[str, Any]) -> Config:
    """Defaults, then the YAML file (--config, else lossdiag.yaml beside the model file), then the CLI."""
    if config_path is None and model_path is not None:
        beside = model_path.parent / "lossdiag.yaml"
        config_path = beside if beside.is_file() else None
    config = Config()
    if config_path is not None:
        config = resolve(read_yaml(config_path), config, source=str(config_path))
    return resolve(cli_options, config, source="")
