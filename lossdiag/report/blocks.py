"""The building blocks of the report's view objects: tables of text cells and the sentences around them, not yet
escaped for any renderer (the terminal aligns them, the page writes them as HTML tables)."""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Table:
    """A table of text cells (not yet escaped for any renderer); the first `text_columns` columns are words."""

    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    text_columns: int = 1


@dataclasses.dataclass(frozen=True)
class Block:
    """A table between the sentence that introduces it and the notes that read it."""

    intro: str
    table: Table
    notes: tuple[str, ...] = ()
