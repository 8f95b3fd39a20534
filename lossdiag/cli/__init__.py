"""The command line: `lossdiag profile | check | report | sweep` (CONTRACT section 2).

`main` is imported on first use, so that `python -m lossdiag` can set up its Ctrl-C handling
(lossdiag.cli.interrupt) before click and the library are imported.
"""
from __future__ import annotations

from typing import Any

__all__ = ["main"]


def __getattr__(name: str) -> Any:
    if name != "main":
        raise AttributeError(f"module 'lossdiag.cli' has no attribute {name!r}")
    from lossdiag.cli.commands import main

    return main
