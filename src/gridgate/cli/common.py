"""What every command shares: consoles, settings loading, failing cleanly, running a coroutine.

Every command imports this module, ``gridgate version`` too: it imports typer and rich only.
What a command needs beyond that it imports when it runs (the web stack takes seconds).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

if TYPE_CHECKING:
    from gridgate.runtime import Runtime
    from gridgate.settings import Settings

__all__ = [
    "ConfigOpt",
    "DataDirOpt",
    "LogFormatOpt",
    "LogLevelOpt",
    "err",
    "fail",
    "open_runtime",
    "out",
    "run_coroutine",
    "settings_from",
]

T = TypeVar("T")
#: Seconds a command waits for the database or Redis to answer before it gives up.
REACH_TIMEOUT_S = 20

out = Console()
err = Console(stderr=True)

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", help="TOML settings file (also GRIDGATE_CONFIG).", show_default=False),
]
DataDirOpt = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Data directory (also GRIDGATE_DATA_DIR).", show_default=False),
]
LogLevelOpt = Annotated[
    Literal["debug", "info", "warning", "error"] | None,
    typer.Option(
        "--log-level",
        help="gridgate's messages from this level on; other libraries' from warning on, "
        "all of them at debug (also GRIDGATE_LOG_LEVEL; default info).",
        show_default=False,
    ),
]
LogFormatOpt = Annotated[
    Literal["console", "json"] | None,
    typer.Option(
        "--log-format",
        help="console for people, json for log collectors (also GRIDGATE_LOG_FORMAT; "
        "default json when GRIDGATE_ENV=production, else console).",
        show_default=False,
    ),
]


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``message`` as one ``error:`` line on stderr and give the exit to raise.

    Exit codes: 2 for what the command line or the configuration says wrong, 1 for what the
    machine refuses (a port taken, the database or Redis unreachable).
    """
    line = " ".join(message.split())  # one line, however the message was put together
    err.print(f"[bold red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def settings_from(config: Path | None, **overrides: Any) -> Settings:
    """The settings (built once), the data dir created, development keys filled in."""
    from gridgate.errors import ConfigurationError  # noqa: PLC0415 - see the module docstring
    from gridgate.settings import load_settings  # noqa: PLC0415

    try:
        settings = load_settings(config, **overrides)
    except ConfigurationError as exc:
        raise fail(str(exc)) from None
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        return settings.with_development_keys()
    except FileExistsError:
        raise fail(f"the data directory {settings.data_dir} is a file") from None
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise fail(f"cannot use the data directory {settings.data_dir}: {reason}") from None
    except ValueError:  # keys.json is not what gridgate wrote there
        raise fail(f"{settings.data_dir / 'keys.json'} is not a keys file gridgate wrote") from None


def run_coroutine(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on a uvloop event loop."""
    import uvloop  # noqa: PLC0415 - see the module docstring

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def _reason(exc: BaseException) -> str:
    """What a driver said about a failed connection, without SQLAlchemy's wrapping."""
    cause = getattr(exc, "orig", None) or exc
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror
    if isinstance(cause, TimeoutError):
        return f"no answer within {REACH_TIMEOUT_S} s"
    text = str(cause).strip().splitlines()
    return text[0] if text else type(cause).__name__


@asynccontextmanager
async def open_runtime(settings: Settings, *, redis: bool = False) -> AsyncIterator[Runtime]:
    """The runtime of a command, once the database (and Redis, if configured and ``redis``)
    answered.

    Unreachable, the command ends with one ``error:`` line and exit code 1 instead of a
    driver's traceback.
    """
    from sqlalchemy import text  # noqa: PLC0415 - see the module docstring

    from gridgate.runtime import Runtime  # noqa: PLC0415
    from gridgate.settings import mask_url  # noqa: PLC0415

    runtime = Runtime.build(settings)
    try:
        try:
            async with asyncio.timeout(REACH_TIMEOUT_S), runtime.db.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception as exc:  # whichever it is, the command cannot go on
            where = mask_url(settings.effective_database_url)
            raise fail(f"cannot reach the database at {where}: {_reason(exc)}", code=1) from None
        if redis and settings.redis_url and not await runtime.registry.ping():
            where = mask_url(settings.redis_url)
            raise fail(f"cannot reach Redis at {where}", code=1)
        yield runtime
    finally:
        await runtime.close()
