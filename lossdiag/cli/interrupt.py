"""What Ctrl-C does to the command line: one line on stderr and exit 130, at any point, imports included."""
from __future__ import annotations

import os
import signal
import sys

EXIT_INTERRUPTED = 130
MESSAGE = "lossdiag: error: interrupted\n"


def say_interrupted(notes: str = "") -> None:
    """Write the one line, with `notes` (where a run kept its records) after it, importing nothing: a Ctrl-C
    during an import can leave a module (torch) half-imported."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        pass
    sys.stderr.write(MESSAGE if not notes else f"{MESSAGE.rstrip()}; {notes}\n")
    sys.stderr.flush()


def exit_interrupted() -> None:
    """Leave the process at once with exit 130, skipping the interpreter's shutdown, which a half-imported module
    can make print a traceback of its own."""
    say_interrupted()
    os._exit(EXIT_INTERRUPTED)
