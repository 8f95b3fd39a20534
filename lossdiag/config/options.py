"""Every option and threshold with its default, and the checks a value must pass to set one."""
from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from typing import Any, Mapping

from lossdiag.config.pairs import parse_main, parse_weights
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
    starved_ratio: float = 0.3
    probe_batches: int = 8
    target_shares: typing.Optional[typing.Dict[str, float]] = None
    no_verify: bool = False
    verify_rounds: int = 2
    points: int = 9
    sweep_steps: int = 200
    metric: typing.Optional[str] = None
    jobs: typing.Optional[int] = None
    run_threads: int = 1
    max_cost: float = 0.1
    min_gain: float = 0.05
    main: typing.Optional[typing.List[str]] = None
    origins: typing.Dict[str, str] = dataclasses.field(default_factory=dict, compare=False, repr=False)
    """Where each option given was set (a YAML file, a command-line flag, a Monitor argument), for error messages;
    not an option itself."""

    def to_dict(self) -> dict[str, Any]:
        """The configuration as plain data, for summary.json and the report."""
        return {key: value for key, value in dataclasses.asdict(self).items() if key != "origins"}


FIELDS = {f.name: f for f in dataclasses.fields(Config) if f.name != "origins"}
CLI_FLAGS = {"target_shares": "--target"}
_POSITIVE = {"steps", "every", "sanity_steps", "probe_batches", "points", "sweep_steps", "jobs", "run_threads"}
_POSITIVE_NUMBER = {"check_noise_z", "check_max_rise"}
_NON_NEGATIVE = {"check_steps", "refine", "seed", "verify_rounds"}
_UNIT_INTERVAL = {"dominance_threshold", "check_min_drop", "starved_ratio", "max_cost", "min_gain"}
_COSINE = {"conflict_cosine"}
SEED_LIMIT = 2 ** 32
MAX_POINTS = 1000
_AT_MOST = {"points": (MAX_POINTS, "a sweep trains every point; split a wider search into several sweeps")}


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
        if name == "out":
            check_out_folder(value, where)
    elif name == "main":
        return parse_main(value, f"{where}'main'")
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
    if name in _AT_MOST and value > _AT_MOST[name][0]:
        limit, why = _AT_MOST[name]
        raise SpecError(f"{where}'{name}' must be at most {limit} ({why}), got {value!r}")
    if name == "seed" and value >= SEED_LIMIT:
        raise SpecError(f"{where}'seed' must be below 2**32 (NumPy's limit), got {value!r}")
    if name in _UNIT_INTERVAL and not 0.0 < value < 1.0:
        raise SpecError(f"{where}'{name}' must be between 0 and 1, got {value!r}")
    if name in _COSINE and not -1.0 < value < 0.0:
        raise SpecError(f"{where}'{name}' must be between -1 and 0, got {value!r}")
    return value


def check_out_folder(value: str, where: str = "") -> str:
    """An output folder's name, refused when blank (it would write into the current folder or the input's)."""
    if not value.strip():
        raise SpecError(f"{where}'out' must name a folder, got {value!r}")
    return value


def check_device(name: str, where: str = "") -> None:
    """A device torch knows and this machine has (cuda without CUDA, or cuda:99 on one GPU, is a usage error)."""
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise SpecError(f"{where}'device' {name!r} is not a device torch knows (e.g. cpu, cuda, cuda:1, mps)") from None
    if device.type == "meta":
        raise SpecError(f"{where}'device' {name!r} holds shapes but no values, so nothing can be trained or measured "
                        f"on it; use cpu or an accelerator")
    try:
        torch.empty(1, device=device)
    except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError, AssertionError or others for a missing device
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise SpecError(f"{where}'device' {name!r} is not available on this machine ({reason})") from None


def _unknown_key_error(key: str, source: str) -> SpecError:
    close = difflib.get_close_matches(key, list(FIELDS), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    where = f"{source}: " if source else ""
    return SpecError(f"{where}unknown option '{key}'{hint}")


def cli_flag(name: str) -> str:
    """The command-line flag that sets option `name`."""
    return CLI_FLAGS.get(name, "--" + name.replace("_", "-"))


def resolve(overrides: Mapping[str, Any], base: Config | None = None, source: str = "",
            origin: typing.Callable[[str], str] | None = None) -> Config:
    """Overlay options on a config, rejecting unknown keys (with the closest valid name) and wrong types; each
    option set is noted as coming from `origin(name)`, else from `source`."""
    base = base or Config()
    checked = {}
    for key, value in overrides.items():
        name = str(key).replace("-", "_")
        if name not in FIELDS:
            raise _unknown_key_error(str(key), source)
        checked[name] = _check_value(name, value, source)
    origins = {name: origin(name) if origin is not None else source for name in checked}
    return dataclasses.replace(base, **checked, origins={**base.origins, **origins})


def origin_of(config: Config, name: str, fallback: str) -> str:
    """Where option `name` of `config` was set, or `fallback` (the model file) when no option set it."""
    return config.origins.get(name) or fallback
