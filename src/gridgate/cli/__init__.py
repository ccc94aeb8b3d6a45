"""The ``gridgate`` command: up, serve, migrate, operator, version."""

from __future__ import annotations

import sys

import typer

from gridgate.cli.common import fail
from gridgate.cli.main import app

__all__ = ["app", "main"]


def main() -> None:
    """Entry point of the ``gridgate`` console script.

    Whatever a user gets wrong (an option, a value, the configuration) ends in one ``error:``
    line on stderr and exit code 2, not in a usage box or a traceback; ``--help`` says more.
    """
    try:
        code = app(standalone_mode=False)
    except typer.TyperException as exc:  # typer's own (vendored click) usage errors
        ctx = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError":
            code = exc.exit_code  # `gridgate` alone: typer printed the help on making it
        else:
            hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
            code = fail(f"{exc.format_message()}{hint}", exc.exit_code).exit_code
    except typer.Abort:  # Ctrl-C or end of input at a prompt
        code = fail("aborted", 1).exit_code
    sys.exit(code if isinstance(code, int) else 0)
