"""`python -m lossdiag` and the `lossdiag` command; a Ctrl-C before the command line takes over (while importing)
is one line and exit 130, like one during a command."""
from lossdiag.cli.interrupt import exit_interrupted


def run() -> None:
    """Import the command line and run it."""
    try:
        from lossdiag.cli import main

        main(prog_name="lossdiag")
    except KeyboardInterrupt:
        exit_interrupted()


if __name__ == "__main__":
    run()
