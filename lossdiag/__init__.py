"""lossdiag: why one term of your loss drowns the others, measured, and what to do about it.

The public names are imported on first use, so that `import lossdiag` (and the command line's start-up, which an
early Ctrl-C may interrupt) does not import torch before it is needed.
"""
from __future__ import annotations

import importlib
import sys
import types
from typing import Any

from lossdiag._version import __version__
from lossdiag.errors import SpecError

_PUBLIC = {"Monitor": "lossdiag.monitor", "ProfileResult": "lossdiag.api", "profile": "lossdiag.api",
           "SweepResult": "lossdiag.sweep.api", "sweep": "lossdiag.sweep.api"}

__all__ = ["Monitor", "ProfileResult", "SpecError", "SweepResult", "__version__", "profile", "sweep"]


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'lossdiag' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


class _Package(types.ModuleType):
    """The package object: importing the subpackage lossdiag.sweep must not hide the function lossdiag.sweep."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "sweep" and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
