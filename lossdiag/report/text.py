"""Text shared by every renderer: numbers, percentages and term names as the terminal, the page and the figures
show them, user strings made harmless, and aligned text tables."""
from __future__ import annotations

import hashlib
import json
import math
from typing import Any, Mapping, Optional, Sequence

from lossdiag.train.probe import meaningful_drop
from lossdiag.config import quote_name


def safe(text: Any) -> str:
    """A user string made harmless for a terminal: control characters and escapes shown, not obeyed."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in str(text))


def term_text(name: Any, limit: Optional[int] = None) -> str:
    """A term name as the terminal, the page and the figures show it. A name holding a character that is not
    printable (or starting with a double quote) is written in double quotes with JSON escapes, as --weights reads
    it, so 'x<newline>y' shows as "x\\ny" and stays apart from 'x\\ny'; past `limit` characters it is cut in the
    middle and ends with '#' and a digest of the whole name, so two long names that share a prefix stay apart."""
    text = str(name)
    if not text.isprintable() or text.startswith('"'):
        text = quote_name(text)
    if limit is None or len(text) <= limit:
        return text
    digest = "#" + hashlib.blake2s(str(name).encode("utf-8", "surrogatepass"), digest_size=2).hexdigest()
    kept = max(limit - len(digest) - 1, 2)
    return f"{text[:(kept + 1) // 2]}…{text[len(text) - kept // 2:]}{digest}"


def quoted_term(name: Any) -> str:
    """A term name quoted once inside a sentence: in single quotes, unless term_text already wrote it in double
    quotes with escapes."""
    text = term_text(name)
    return text if text.startswith('"') else f"'{text}'"


def plain(lines: Sequence[str]) -> str:
    """Lines as terminal text with every control character shown, not obeyed, whatever they interpolate."""
    return "".join(safe(line) + "\n" for line in "\n".join(lines).split("\n"))


def _missing(value: Optional[float]) -> bool:
    return value is None or (isinstance(value, float) and not math.isfinite(value))


def number(value: Optional[float], digits: int = 4) -> str:
    """A compact number; '-' for a missing or non-finite one."""
    return "-" if _missing(value) else f"{value:.{digits}g}"


def signed(value: Optional[float]) -> str:
    """A relative change with its sign ('-' when missing); past +-1000%, 3 significant digits."""
    if _missing(value):
        return "-"
    return f"{value:+.1%}" if abs(value) < 10 else f"{value * 100:+.3g}%"


def percent(value: Optional[float]) -> str:
    """A fraction as a percentage with one decimal ('-' for a missing or non-finite one); past 1000%, 3 digits."""
    if _missing(value):
        return "-"
    return f"{value:.1%}" if abs(value) < 10 else f"{value * 100:.3g}%"


def readable_drop(value: Optional[float]) -> str:
    """A relative drop as a percentage, or 'from ~0' where it means nothing (probe.meaningful_drop: a term that
    starts near 0, whose losses in units, beside it, say what happened)."""
    if not _missing(value) and meaningful_drop(value) is None:
        return "from ~0"
    return percent(value)


def listing(names: Sequence[str], most: int = 6) -> str:
    """Names joined by commas, the rest counted; 'none' for an empty list."""
    if not names:
        return "none"
    shown = ", ".join(term_text(n) for n in names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def aligned(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A text table: the header, a rule and the rows, each column padded to its widest cell."""
    widths = [max(len(row[c]) for row in [header, *rows]) for c in range(len(header))]

    def line(row: Sequence[str]) -> str:
        return "  ".join(cell.ljust(widths[c]) for c, cell in enumerate(row)).rstrip()

    return [line(header), line(["-" * w for w in widths]), *map(line, rows)]


def option_rows(config: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """The resolved options as (name, value) text pairs, a list or mapping value written as JSON."""
    return tuple((str(key), json.dumps(value) if isinstance(value, (dict, list)) else str(value))
                 for key, value in config.items())
