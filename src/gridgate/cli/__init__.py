"""The ``gridgate`` command: up, serve, migrate, operator, version."""

from __future__ import annotations

from gridgate.cli.main import app

__all__ = ["app", "main"]


def main() -> None:
    """Entry point of the ``gridgate`` console script."""
    app()
