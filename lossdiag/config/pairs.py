"""Term names and values in options: 'name=value,...' text (names quoted when they hold ',' or '='), weights, and
the `main` terms."""
from __future__ import annotations

import difflib
import json
import math
from typing import Any, Iterable, Mapping, Sequence

from lossdiag.errors import SpecError


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
