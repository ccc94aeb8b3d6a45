"""Typer commands. Each builds the settings once and hands them down.

Only the command line is defined here. A command imports what it runs (``gridgate.cli.serving``,
``gridgate.cli.admin``) when it runs, so that ``gridgate version`` and ``--help`` do not load the
web stack, which takes seconds.
"""

from __future__ import annotations

from typing import Annotated

import typer

import gridgate
from gridgate.cli.bench import bench_app
from gridgate.cli.common import (
    ConfigOpt,
    DataDirOpt,
    LogFormatOpt,
    LogLevelOpt,
    settings_from,
)
from gridgate.cli.logs import logs_app

app = typer.Typer(
    name="gridgate",
    help="gridgate: unified channel access platform for electric utilities.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
operator_app = typer.Typer(help="Manage back-office operators.", no_args_is_help=True)
app.add_typer(operator_app, name="operator")
app.add_typer(logs_app, name="logs")
accounts_app = typer.Typer(help="Manage the accounts service.", no_args_is_help=True)
app.add_typer(accounts_app, name="accounts")
app.add_typer(bench_app, name="bench")


@app.command()
def version() -> None:
    """Print the gridgate version."""
    typer.echo(f"gridgate {gridgate.__version__}")


@app.command()
def migrate(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    revision: Annotated[str, typer.Option(help="Target schema revision.")] = "head",
    log_level: LogLevelOpt = None,
    log_format: LogFormatOpt = None,
) -> None:
    """Bring the database schema up to date ('gridgate up' does this by itself)."""
    settings = settings_from(config, data_dir=data_dir, log_level=log_level, log_format=log_format)
    from gridgate.cli import admin  # noqa: PLC0415 - see the module docstring

    admin.migrate(settings, revision)


@app.command()
def up(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    gateway_port: Annotated[int | None, typer.Option(help="Gateway port (8080).")] = None,
    admin_port: Annotated[int | None, typer.Option(help="Admin API port (8090).")] = None,
    registry_port: Annotated[int | None, typer.Option(help="Registry port (8070).")] = None,
    host: Annotated[
        str | None, typer.Option(help="Address of the gateway, the channel-facing listener.")
    ] = None,
    admin_host: Annotated[
        str | None, typer.Option(help="Address of the admin listener (127.0.0.1).")
    ] = None,
    internal_host: Annotated[
        str | None,
        typer.Option(help="Address of the registry, accounts and demo listeners (127.0.0.1)."),
    ] = None,
    log_level: LogLevelOpt = None,
    log_format: LogFormatOpt = None,
) -> None:
    """Run every role in one process; seed demo data on an empty data dir (development).

    Only the gateway binds to --host: the admin listener and the listeners the platform
    alone calls stay on loopback unless --admin-host or --internal-host says otherwise.
    After the start banner the console shows warnings, errors and at most one traffic line a
    minute; --log-level debug shows everything.
    """
    settings = settings_from(
        config,
        data_dir=data_dir,
        gateway_port=gateway_port,
        admin_port=admin_port,
        registry_port=registry_port,
        bind_host=host,
        admin_bind_host=admin_host,
        internal_bind_host=internal_host,
        log_level=log_level,
        log_format=log_format,
    )
    from gridgate.cli import serving  # noqa: PLC0415 - see the module docstring

    serving.up(settings)


@app.command("serve")
def serve_role(
    role: Annotated[
        str,
        typer.Argument(
            help="gateway, admin, registry, accounts, logs, or demo-<system> "
            "(demo-marketing, demo-billing, demo-payment, demo-notices, demo-consultation).",
            show_default=False,
        ),
    ],
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    port: Annotated[int | None, typer.Option(help="Port (the role's default).")] = None,
    host: Annotated[str | None, typer.Option(help="Address to bind (127.0.0.1).")] = None,
    log_level: LogLevelOpt = None,
    log_format: LogFormatOpt = None,
) -> None:
    """Run one role on its own listener (migrations are the job of 'gridgate migrate' here)."""
    from gridgate.cli import serving  # noqa: PLC0415 - see the module docstring

    serving.check_role(role)
    settings = settings_from(
        config, data_dir=data_dir, bind_host=host, log_level=log_level, log_format=log_format
    )
    serving.serve_role(settings, role, port)


@app.command("internal-key")
def internal_key(
    service: Annotated[str, typer.Argument(help="The service name the system registers as.")],
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Print the key a business system verifies the gateway's X-GG-Internal signature with."""
    settings = settings_from(config, data_dir=data_dir)
    from gridgate.cli import admin  # noqa: PLC0415 - see the module docstring

    admin.internal_key(settings, service)


@operator_app.command("create")
def operator_create(
    username: Annotated[str, typer.Option(help="Operator user name.")],
    role: Annotated[
        list[str], typer.Option("--role", help="admin, reviewer or auditor (repeatable).")
    ],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Create a back-office operator (the password is asked for, never given as an argument)."""
    settings = settings_from(config, data_dir=data_dir)
    from gridgate.cli import admin  # noqa: PLC0415 - see the module docstring

    admin.operator_create(settings, username, role, password_stdin=password_stdin)


@accounts_app.command("rotate-key")
def accounts_rotate_key(config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """Start signing customer tokens with a new key; tokens of the old one stay valid."""
    settings = settings_from(config, data_dir=data_dir)
    from gridgate.cli import admin  # noqa: PLC0415 - see the module docstring

    admin.rotate_key(settings)
