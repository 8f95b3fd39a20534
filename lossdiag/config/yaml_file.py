"""The YAML overlay: a config file read safely (bounded in size, depth and values, no repeated keys) and laid over
the defaults, then the command line over both."""
from __future__ import annotations

import functools
import typing
from pathlib import Path
from typing import Any, Mapping

from lossdiag.config.options import Config, check_device, cli_flag, resolve
from lossdiag.errors import SpecError

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
