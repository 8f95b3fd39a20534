"""Every option and threshold with its default, and the YAML overlay on top of them."""
from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import math
import typing
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

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
_POSITIVE = {"steps", "every", "sanity_steps", "probe_batches", "points", "sweep_steps", "jobs"}
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


def parse_main(value: Any, what: str) -> list[str]:
    """The `main` terms: a list of term names, or 'a,b' text."""
    if isinstance(value, str):
        value = [name.strip() for name in value.split(",") if name.strip()]
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(n, str) and n for n in value):
        raise SpecError(f"{what} must be a list of term names (or 'a,b'), got {value!r:.80}")
    return list(dict.fromkeys(value))


MAX_WEIGHT = 1e30
_SPECIAL = set(',="\\')


def quote_name(name: str) -> str:
    """A term name as 'name=value' text can carry it: in double quotes with JSON escapes when it holds
    ',', '=', a quote, a backslash, a control character or surrounding spaces; else as it is."""
    if name and name == name.strip() and name.isprintable() and not _SPECIAL & set(name):
        return name
    quoted = json.dumps(name, ensure_ascii=False)
    return "".join(ch if ch.isprintable() else f"\\u{ord(ch):04x}" for ch in quoted)


def format_pairs(values: Mapping[str, str]) -> str:
    """'name=value,...' text that parse_pairs reads back to the same names."""
    return ",".join(f"{quote_name(name)}={value}" for name, value in values.items())


def parse_pairs(text: str, what: str) -> dict[str, str]:
    """Read 'name=value,name=value' text; a name in double quotes (JSON escapes) may hold ',' and '='."""
    decoder = json.JSONDecoder()
    pairs: dict[str, str] = {}
    shape = f"{what} must look like 'name=0.5,other=0.5' (quote a name holding ',' or '=': '\"a,b\"=0.5'), got {text!r}"
    position = 0
    while position < len(text):
        if text[position] in ", ":
            position += 1
            continue
        if text[position] == '"':
            try:
                name, position = decoder.raw_decode(text, position)
            except ValueError:
                raise SpecError(shape) from None
        else:
            end = text.find("=", position)
            name = text[position:end if end >= 0 else len(text)].strip()
            if end < 0 or "," in name or not name:
                raise SpecError(shape)
            position = end
        if not text.startswith("=", position):
            raise SpecError(shape)
        end = text.find(",", position)
        end = len(text) if end < 0 else end
        pairs[name] = text[position + 1:end].strip()
        position = end + 1
    return pairs


def parse_weights(value: Any, what: str = "weights") -> dict[str, float]:
    """Read term weights from a mapping or from 'name=value,name=value' text (names quoted as quote_name does)."""
    if isinstance(value, str):
        parsed: dict[str, Any] = {}
        for name, number in parse_pairs(value, what).items():
            try:
                parsed[name] = float(number)
            except ValueError:
                raise SpecError(f"{what}: weight of '{name}' must be a number, got {number!r}") from None
        value = parsed
    if not isinstance(value, Mapping) or not value:
        raise SpecError(f"{what} must be a mapping of term name to number, got {value!r:.80}")
    weights = {}
    for name, weight in value.items():
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
            raise SpecError(f"{what}: weight of '{name}' must be a finite number, got {weight!r:.40}")
        if weight < 0:
            raise SpecError(f"{what}: weight of '{name}' must be 0 or more (a negative weight maximises the term), "
                            f"got {weight!r}")
        if weight > MAX_WEIGHT:
            raise SpecError(f"{what}: weight of '{name}' must be at most {MAX_WEIGHT:g} (a weighted gradient must "
                            f"fit in float32), got {weight!r}")
        weights[str(name)] = float(weight)
    return weights


def check_known_terms(given: Iterable[str], terms: Sequence[str], what: str, source: str = "") -> None:
    """Every name in `given` (the keys of 'weights' or 'target_shares') is one of the terms: a misspelt name would
    otherwise be ignored without a word."""
    unknown = [name for name in given if name not in terms]
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(terms), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        where = f"{source}: " if source else ""
        raise SpecError(f"{where}{what} name unknown term '{unknown[0]}'{hint}; the terms are {list(terms)}")


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


MAX_CONFIG_BYTES = 64 * 1024
MAX_CONFIG_DEPTH = 8
MAX_CONFIG_NODES = 2000
MAX_NUMBER_CHARS = 100


def oversized_number(text: str) -> str:
    """Why `text` is refused as a number before it is read ('' when it is not): past MAX_NUMBER_CHARS digits no
    option takes it, and Python's int() of 4300 digits or more raises a message of its own."""
    if len(text) > MAX_NUMBER_CHARS and text.lstrip("+-").replace("_", "").isdigit():
        return f"a number of {len(text):,} digits is larger than any option takes"
    return ""


@functools.lru_cache(maxsize=None)
def _loader() -> type:
    """yaml.SafeLoader that refuses a key given twice in one mapping (plain YAML keeps the last one silently)."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> dict:
            first: dict[Any, Any] = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if isinstance(key, typing.Hashable) and key in first:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"{key!r} is given twice (first at line {first[key].line + 1}); keep one",
                        key_node.start_mark)
                if isinstance(key, typing.Hashable):
                    first[key] = key_node.start_mark
            return super().construct_mapping(node, deep)

    return UniqueKeyLoader


def _bounded_events(text: str, path: Path) -> None:
    """Refuse what could make safe loading slow or deep: anchors and aliases (an alias bomb expands
    exponentially), nesting past MAX_CONFIG_DEPTH and more than MAX_CONFIG_NODES values."""
    import yaml

    depth = nodes = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise SpecError(f"{path}: YAML anchors and aliases ('&', '*') are not accepted in a config")
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_CONFIG_DEPTH:
                raise SpecError(f"{path}: the config nests deeper than {MAX_CONFIG_DEPTH} levels")
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
        if isinstance(event, yaml.ScalarEvent) and event.style is None and oversized_number(event.value):
            raise SpecError(f"{path}: line {event.start_mark.line + 1}: {oversized_number(event.value)}")
        if isinstance(event, yaml.NodeEvent):
            nodes += 1
            if nodes > MAX_CONFIG_NODES:
                raise SpecError(f"{path}: the config holds more than {MAX_CONFIG_NODES} values")


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML config file (safe loading, UTF-8, bounded in size, depth and values) into a mapping of options."""
    import yaml

    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SpecError(f"{path}: cannot read config ({exc.strerror})") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise SpecError(f"{path}: a config is at most {MAX_CONFIG_BYTES // 1024} KiB, this one is {len(raw):,} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"{path}: a config must be UTF-8 text (byte {exc.start} is not); save it as UTF-8") from None
    if "\0" in text:
        raise SpecError(f"{path}: a config must be text, this one holds NUL bytes")
    try:
        _bounded_events(text, path)
        data = yaml.load(text, Loader=_loader())  # noqa: S506 - a SafeLoader that also refuses repeated keys
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError(f"{path}: not valid YAML{line}: {problem}") from None
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
    config = resolve(cli_options, config, source="", origin=cli_flag)
    if config.device is not None:
        check_device(config.device, "" if "device" in cli_options else f"{config_path}: ")
    return config
