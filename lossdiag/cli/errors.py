"""How the command line fails: one line on stderr and an exit code (2 bad input, 3 a crash, 130 Ctrl-C), never a
traceback unless --debug."""
from __future__ import annotations

import functools
import os
import sys
import traceback
from typing import Any, Callable

import click

from lossdiag.cli.interrupt import EXIT_INTERRUPTED, say_interrupted
from lossdiag.errors import SpecError

EXIT_OK, EXIT_FINDINGS, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3
NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


def exit_code(summary: dict, strict: bool) -> int:
    """0 without errors (and, with --strict, without warnings); 1 otherwise."""
    severities = {f["severity"] for f in summary["findings"]}
    failing = {"error", "warning"} if strict else {"error"}
    return EXIT_FINDINGS if severities & failing else EXIT_OK


def _fail(message: str, code: int) -> None:
    from lossdiag.report.text import safe

    click.echo(f"lossdiag: error: {safe(message)}", err=True)
    sys.exit(code)


def _interrupted(exc: BaseException | None = None) -> None:
    """Ctrl-C: one line, naming where the run kept its records if it did, and exit 130; importing nothing when
    there is nothing to name (torch may be half-imported)."""
    notes = getattr(exc, "__notes__", ())
    if notes:
        from lossdiag.report.text import safe

        say_interrupted(safe("; ".join(notes)))
    else:
        say_interrupted()
    sys.exit(EXIT_INTERRUPTED)


def _noted(exc: BaseException, message: str) -> str:
    """The message with the notes a run added on its way out (where its records were kept)."""
    return "; ".join([message, *getattr(exc, "__notes__", ())])


def _exit(exc: BaseException, message: str, code: int, debug: bool) -> None:
    """One line and `code`; with --debug the traceback first, and still `code`."""
    if debug:
        traceback.print_exception(exc)
    _fail(_noted(exc, message), code)


def guarded(command: Callable) -> Callable:
    """Turn bad input into one line and exit 2, and a crash into one line and exit 3 (--debug adds the traceback)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        debug = bool(kwargs.get("debug"))
        try:
            return command(*args, **kwargs)
        except SpecError as exc:
            _exit(exc, str(exc), EXIT_USAGE, debug)
        except BrokenPipeError:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(EXIT_OK)
        except OSError as exc:
            where = f"{exc.filename}: " if exc.filename else ""
            _exit(exc, f"{where}cannot write the outputs ({exc.strerror or exc})", EXIT_USAGE, debug)
        except KeyboardInterrupt as exc:
            _interrupted(exc)
        except Exception as exc:  # noqa: BLE001 - the last line of defence of a command-line tool
            _exit(exc, f"internal error: {type(exc).__name__}: {exc} (run again with --debug for the traceback)",
                  EXIT_INTERNAL, debug)

    return wrapper


class OneLineErrors(click.Group):
    """A click group whose usage errors are one line naming the problem, with exit code 2."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        try:
            returned = super().main(*args, **kwargs)
        except NO_ARGS_IS_HELP as exc:
            click.echo(exc.format_message())
            sys.exit(EXIT_OK)
        except click.ClickException as exc:
            context = getattr(exc, "ctx", None)
            where = f" (see '{context.command_path} --help')" if context is not None else ""
            _fail(f"{exc.format_message()}{where}", exc.exit_code)
        except click.exceptions.Abort:
            _interrupted()
        sys.exit(returned if isinstance(returned, int) else EXIT_OK)
