"""What every command shares: consoles, settings loading, failing cleanly, running a coroutine."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
import uvloop
from rich.console import Console

from gridgate.errors import ConfigurationError
from gridgate.settings import Settings, load_settings

__all__ = ["ConfigOpt", "DataDirOpt", "err", "fail", "out", "run_coroutine", "settings_from"]

out = Console()
err = Console(stderr=True)
T = TypeVar("T")

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", help="TOML settings file (also GRIDGATE_CONFIG).", show_default=False),
]
DataDirOpt = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Data directory (also GRIDGATE_DATA_DIR).", show_default=False),
]


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``message`` as an error and give the exit to raise (no traceback)."""
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


def settings_from(config: Path | None, **overrides: Any) -> Settings:
    """The settings (built once), the data dir created, development keys filled in."""
    try:
        settings = load_settings(config, **overrides)
        settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        return settings.with_development_keys()
    except ConfigurationError as exc:
        raise fail(str(exc)) from None


def run_coroutine(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on a uvloop event loop."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)
