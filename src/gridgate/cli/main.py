"""Typer commands. Each builds the settings once and hands them down."""

from __future__ import annotations

import asyncio
import getpass
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
import uvloop
from rich.console import Console
from rich.table import Table

import gridgate
from gridgate.accounts.parts import AccountsParts
from gridgate.app import ROLES, build_role
from gridgate.cli.logs import logs_app
from gridgate.demo.data import generate_demo_data
from gridgate.demo.runner import demo_listeners, registrations
from gridgate.demo.seed import demo_passwords, read_demo_file, seed_demo, write_demo_file
from gridgate.demo.systems import SYSTEMS
from gridgate.errors import ConfigurationError, GridgateError
from gridgate.logconfig import configure_logging
from gridgate.operators.audit import Actor
from gridgate.operators.schemas import OperatorCreate, Role
from gridgate.operators.services import OperatorService
from gridgate.runtime import Runtime
from gridgate.server import Listener, ListenerError, bind, serve
from gridgate.settings import Settings, load_settings

app = typer.Typer(
    name="gridgate",
    help="gridgate: unified channel access platform for electric utilities.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
_ROLE_NAMES = [*ROLES, *(f"demo-{code}" for code in SYSTEMS)]
operator_app = typer.Typer(help="Manage back-office operators.", no_args_is_help=True)
app.add_typer(operator_app, name="operator")
app.add_typer(logs_app, name="logs")
accounts_app = typer.Typer(help="Manage the accounts service.", no_args_is_help=True)
app.add_typer(accounts_app, name="accounts")
bench_app = typer.Typer(help="Measure gridgate (development machines).", no_args_is_help=True)
app.add_typer(bench_app, name="bench")

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


def _fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


def _settings(config: Path | None, **overrides: Any) -> Settings:
    try:
        settings = load_settings(config, **overrides)
        settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        return settings.with_development_keys()
    except ConfigurationError as exc:
        raise _fail(str(exc)) from None


def _run(coro: Coroutine[Any, Any, T]) -> T:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


@app.command()
def version() -> None:
    """Print the gridgate version."""
    out.print(f"gridgate {gridgate.__version__}")


@app.command()
def migrate(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    revision: Annotated[str, typer.Option(help="Target schema revision.")] = "head",
) -> None:
    """Bring the database schema up to date (``gridgate up`` does this by itself)."""
    settings = _settings(config, data_dir=data_dir)
    configure_logging(settings.log_level, settings.log_format)

    async def run() -> str | None:
        runtime = Runtime.build(settings)
        try:
            await runtime.db.migrate(revision)
            return await runtime.db.current_revision()
        finally:
            await runtime.close()

    out.print(f"database at revision [bold]{_run(run())}[/]")


@app.command()
def up(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    gateway_port: Annotated[int | None, typer.Option(help="Gateway port (8080).")] = None,
    admin_port: Annotated[int | None, typer.Option(help="Admin API port (8090).")] = None,
    registry_port: Annotated[int | None, typer.Option(help="Registry port (8070).")] = None,
    host: Annotated[str | None, typer.Option(help="Address to bind (127.0.0.1).")] = None,
) -> None:
    """Run every role in one process; seed demo data on an empty data dir (development)."""
    settings = _settings(
        config,
        data_dir=data_dir,
        gateway_port=gateway_port,
        admin_port=admin_port,
        registry_port=registry_port,
        bind_host=host,
    )
    configure_logging(settings.log_level, settings.log_format)
    ports = {
        "gateway": settings.gateway_port,
        "admin": settings.admin_port,
        "registry": settings.registry_port,
        # An intranet service found through the registry, like the business systems.
        "accounts": 0,
    }
    _run(_up(settings, ports))


async def _up(settings: Settings, ports: dict[str, int]) -> None:
    runtime = Runtime.build(settings)
    try:
        await runtime.db.migrate()
        accounts = AccountsParts.build(runtime)
        roles = {role: build_role(role, runtime, accounts=accounts) for role in ports}
        listeners = [
            Listener(role, roles[role].app, settings.bind_host, port)
            for role, port in ports.items()
        ]
        demo: list[Listener] = []
        data = None if settings.production else generate_demo_data()
        if data is not None:
            demo = demo_listeners(data, settings.bind_host)
        try:
            bind([*listeners, *demo])
        except ListenerError as exc:
            raise _fail(str(exc), code=1) from None
        # Seeded only once the ports are ours: a failed start must not leave a seed whose
        # secrets never reached demo.json.
        seeded = None if data is None else await seed_demo(runtime, data)
        urls = {lst.name: lst.url for lst in listeners}
        background = [job for role in roles.values() for job in role.jobs(urls)]
        out.print(f"[bold green]gridgate {gridgate.__version__}[/] is up:")
        out.print(f"  gateway   {urls['gateway']}   (channels sign requests to it)")
        out.print(f"  admin     {urls['admin']}/admin/docs   (admin API and Swagger UI)")
        out.print(f"  registry  {urls['registry']}   (service center)")
        out.print(f"  accounts  {urls['accounts']}   (behind the gateway; JWKS for gateways)")
        if not settings.production:
            passwords = await demo_passwords(runtime, [*sorted(SYSTEMS), "accounts", "permissions"])
            # The accounts service registers like the demo systems: the gateway finds it there.
            running = [lst for lst in demo if lst.name.removeprefix("demo-") in passwords]
            running += [lst for lst in listeners if lst.name == "accounts"]
            # The accounts listener also answers the permissions interfaces (GET /me/menus).
            running += [
                Listener("permissions", lst.app, lst.host, lst.port)
                for lst in listeners
                if lst.name == "accounts"
            ]
            background.append(registrations(running, [urls["registry"]], passwords))
            systems = sorted({lst.name for lst in running})
            out.print(f"  demo      {len(running)} instances of {', '.join(systems)}")
            demo_file = write_demo_file(settings.data_dir, urls, seeded)
            note = "demo data seeded" if seeded else "existing data kept"
            out.print(f"  {note}; credentials in [bold]{demo_file.resolve()}[/] (mode 0600)")
        out.print("Press Ctrl-C to stop.")
        await serve(
            [*listeners, *demo],
            shutdown_timeout_s=settings.shutdown_timeout_s,
            background=background,
        )
    finally:
        await runtime.close()


@app.command("serve")
def serve_role(
    role: Annotated[str, typer.Argument(help=f"One of: {', '.join(_ROLE_NAMES)}.")],
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    port: Annotated[int | None, typer.Option(help="Port (the role's default).")] = None,
    host: Annotated[str | None, typer.Option(help="Address to bind (127.0.0.1).")] = None,
) -> None:
    """Run one role on its own listener (migrations are ``gridgate migrate``'s job here)."""
    if role not in _ROLE_NAMES:
        raise _fail(f"unknown role {role!r}; choose one of {', '.join(_ROLE_NAMES)}")
    settings = _settings(config, data_dir=data_dir, bind_host=host)
    configure_logging(settings.log_level, settings.log_format)
    if role.startswith("demo-"):
        _run(_serve_demo(settings, role.removeprefix("demo-"), port or 0))
        return
    chosen = port if port is not None else getattr(settings, f"{role}_port")

    async def run() -> None:
        runtime = Runtime.build(settings)
        try:
            built = build_role(role, runtime)
            listener = Listener(role, built.app, settings.bind_host, chosen)
            try:
                bind([listener])
            except ListenerError as exc:
                raise _fail(str(exc), code=1) from None
            out.print(f"gridgate {role} listening on {listener.url}")
            urls = {"registry": f"http://127.0.0.1:{settings.registry_port}", role: listener.url}
            background = built.jobs(urls)
            if role == "accounts":
                # A business system like any other: it registers so gateways find it.
                registry_urls = settings.registry_urls or [urls["registry"]]
                passwords = {
                    code: _system_password(settings, code) for code in ("accounts", "permissions")
                }
                shown = [listener, Listener("permissions", built.app, listener.host, listener.port)]
                background.append(registrations(shown, registry_urls, passwords))
            await serve(
                [listener], shutdown_timeout_s=settings.shutdown_timeout_s, background=background
            )
        finally:
            await runtime.close()

    _run(run())


def _system_password(settings: Settings, system: str) -> str:
    """The password a business system registers with: from settings, else from demo.json."""
    if settings.business_system_password is not None:
        return settings.business_system_password.get_secret_value()
    known = {
        s["code"]: s["password"]
        for s in read_demo_file(settings.data_dir).get("business_systems", [])
    }
    if system not in known:
        raise _fail(
            f"no password for business system {system!r}: set "
            "GRIDGATE_BUSINESS_SYSTEM_PASSWORD or run `gridgate up` first for demo.json"
        )
    return str(known[system])


async def _serve_demo(settings: Settings, system: str, port: int) -> None:
    """One instance of a demo business system, registered in the registry it is pointed at."""
    password = _system_password(settings, system)
    registry_urls = settings.registry_urls or [f"http://127.0.0.1:{settings.registry_port}"]
    [listener] = demo_listeners(
        generate_demo_data(), settings.bind_host, systems=[system], copies=1
    )
    listener.port = port
    try:
        bind([listener])
    except ListenerError as exc:
        raise _fail(str(exc), code=1) from None
    out.print(
        f"demo {system} listening on {listener.url}, registering at {', '.join(registry_urls)}"
    )
    await serve(
        [listener],
        shutdown_timeout_s=settings.shutdown_timeout_s,
        background=[registrations([listener], registry_urls, {system: password})],
    )


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
    settings = _settings(config, data_dir=data_dir)
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Repeat: ") != password:
            raise _fail("the passwords differ")
    try:
        data = OperatorCreate.model_validate(
            {"username": username, "password": password, "roles": role}
        )
    except ValueError as exc:
        reasons = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            for e in getattr(exc, "errors", lambda **_: [])(include_input=False)
        )
        raise _fail(reasons or "invalid operator") from None
    actor = Actor(username=f"cli:{getpass.getuser()}")

    async def run() -> None:
        runtime = Runtime.build(settings)
        try:
            await runtime.db.migrate()
            async with runtime.db.transaction() as session:
                await OperatorService(session).create(data, actor)
        finally:
            await runtime.close()

    try:
        _run(run())
    except GridgateError as exc:
        raise _fail(exc.detail) from None
    roles: list[Role] = data.roles
    out.print(f"operator [bold]{username}[/] created with roles {', '.join(roles)}")


@bench_app.command("registry")
def bench_registry(
    duration: Annotated[int, typer.Option(min=1, help="Seconds per wrk run.")] = 10,
    instances: Annotated[int, typer.Option(min=1, help="Instances registered first.")] = 10_000,
    watchers: Annotated[int, typer.Option(min=1, help="Concurrent long-poll watchers.")] = 200,
    markdown: Annotated[bool, typer.Option("--markdown", help="Also print Markdown.")] = False,
) -> None:
    """Heartbeats, queries and registrations per core, and watch latency, on Redis."""
    # Imported here: the benchmark is never part of a listener's process.
    from gridgate.bench.registry import run_registry_bench  # noqa: PLC0415

    command = " ".join(["gridgate", *sys.argv[1:]])
    try:
        report = run_registry_bench(
            duration=duration,
            instances=instances,
            watchers=watchers,
            command=command,
            progress=lambda message: err.print(f"[dim]… {message}[/]", highlight=False),
        )
    except RuntimeError as exc:
        raise _fail(str(exc), code=1) from None
    table = Table(title="gridgate registry benchmark (Redis store, one node)")
    for column in ("Metric", "Result", "Detail", "Target", "Met"):
        table.add_column(column)
    for row in report.rows:
        met = "" if row.met is None else ("[green]yes[/]" if row.met else "[red]no[/]")
        table.add_row(row.metric, row.result, row.detail, row.target, met)
    for name, value in report.machine.items():
        out.print(f"{name}: {value}", highlight=False)
    out.print(table)
    if markdown:
        print(report.markdown())


@bench_app.command("gateway")
def bench_gateway(
    duration: Annotated[int, typer.Option(min=1, help="Seconds per wrk run.")] = 10,
    half_rate: Annotated[
        int | None,
        typer.Option(min=1, help="Requests/s of the paced runs (default: half of the max)."),
    ] = None,
    profile: Annotated[
        Path | None,
        typer.Option(help="Also record the gateway under load with py-spy (collapsed stacks)."),
    ] = None,
    markdown: Annotated[bool, typer.Option("--markdown", help="Also print Markdown.")] = False,
) -> None:
    """Gateway vs nginx per core on a 1 KB JSON backend: RPS, p50/p99, added p99 latency."""
    # Imported here: the benchmark is never part of a listener's process.
    from gridgate.bench.gateway import run_gateway_bench  # noqa: PLC0415

    command = " ".join(["gridgate", *sys.argv[1:]])
    try:
        report = run_gateway_bench(
            duration=duration,
            half_rate=half_rate,
            profile=profile,
            command=command,
            progress=lambda message: err.print(f"[dim]… {message}[/]", highlight=False),
        )
    except RuntimeError as exc:
        raise _fail(str(exc), code=1) from None
    table = Table(title="gridgate gateway benchmark (one core each, 1 KB JSON backend)")
    for column in ("Metric", "Result", "Detail", "Target", "Met"):
        table.add_column(column)
    for row in report.rows:
        met = "" if row.met is None else ("[green]yes[/]" if row.met else "[red]no[/]")
        table.add_row(row.metric, row.result, row.detail, row.target, met)
    for name, value in report.machine.items():
        out.print(f"{name}: {value}", highlight=False)
    out.print(table)
    if markdown:
        print(report.markdown())


@bench_app.command("logs")
def bench_logs(
    records: Annotated[
        int, typer.Option(min=1000, help="Records through the ingest path.")
    ] = 200_000,
    analysis_records: Annotated[
        int, typer.Option(min=1000, help="Records in the analysis data set.")
    ] = 10_000_000,
) -> None:
    """Ingest records/s into Parquet (beside a plain write) and the hourly rollup time."""
    from gridgate.logs.bench import run_analysis_bench, run_ingest_bench  # noqa: PLC0415

    ingest = _run(run_ingest_bench(records))
    analysis = _run(run_analysis_bench(analysis_records))
    table = Table(title="gridgate log pipeline benchmark")
    for column in ("Metric", "Result"):
        table.add_column(column)
    table.add_row(
        "ingest records/s (service → spool → Parquet, fsync)", f"{ingest.pipeline_per_s:,.0f}"
    )
    table.add_row(
        "plain sequential write of the same bytes",
        f"{ingest.raw_write_mb_per_s:,.0f} MB/s ({ingest.raw_records_per_s:,.0f} records/s)",
    )
    table.add_row("ingest CPU seconds", f"{ingest.cpu_s:.2f}")
    table.add_row(
        f"hourly rollup of {analysis.records:,} records ({analysis.hours} h)",
        f"{analysis.compute_s:.2f} s",
    )
    out.print(table)


@bench_app.command("accounts")
def bench_accounts(
    duration: Annotated[int, typer.Option(min=1, help="Seconds per throughput run.")] = 10,
    accounts: Annotated[
        int, typer.Option(min=1000, help="Accounts (and bindings) seeded on PostgreSQL.")
    ] = 1_000_000,
    lookups: Annotated[int, typer.Option(min=100, help="Look-ups timed per kind.")] = 10_000,
    concurrency: Annotated[int, typer.Option(min=1, help="Concurrent refresh tasks.")] = 16,
    sqlite: Annotated[
        bool, typer.Option("--sqlite/--no-sqlite", help="Also logins and refreshes on SQLite.")
    ] = True,
    markdown: Annotated[bool, typer.Option("--markdown", help="Also print Markdown.")] = False,
) -> None:
    """Password logins and refreshes per core vs Keycloak; look-up p99 at 1M accounts."""
    # Imported here: the benchmark is never part of a listener's process.
    from gridgate.bench.accounts import run_accounts_bench  # noqa: PLC0415

    command = " ".join(["gridgate", *sys.argv[1:]])
    try:
        report = run_accounts_bench(
            duration=duration,
            accounts=accounts,
            lookups=lookups,
            concurrency=concurrency,
            sqlite=sqlite,
            command=command,
            progress=lambda message: err.print(f"[dim]… {message}[/]", highlight=False),
        )
    except RuntimeError as exc:
        raise _fail(str(exc), code=1) from None
    table = Table(title="gridgate accounts benchmark (service layer, one core, no HTTP)")
    for column in ("Metric", "Result", "Detail", "Target", "Met"):
        table.add_column(column)
    for row in report.rows:
        met = "" if row.met is None else ("[green]yes[/]" if row.met else "[red]no[/]")
        table.add_row(row.metric, row.result, row.detail, row.target, met)
    for name, value in report.machine.items():
        out.print(f"{name}: {value}", highlight=False)
    out.print(table)
    if markdown:
        print(report.markdown())


@bench_app.command("permissions")
def bench_permissions(
    interfaces: Annotated[int, typer.Option(min=10, help="Interfaces in the catalog.")] = 10_000,
    decisions: Annotated[int, typer.Option(min=1000, help="Decisions timed.")] = 1_000_000,
) -> None:
    """Permission decisions per second on one core, and catalog compile time."""
    from gridgate.bench.permissions import run_permissions_bench  # noqa: PLC0415

    report = run_permissions_bench(interfaces, decisions)
    table = Table(title="gridgate permission decisions (one core, in-process)")
    for column in ("Metric", "Result", "Target"):
        table.add_column(column)
    table.add_row(
        f"compile a snapshot of {report.interfaces:,} interfaces",
        f"{report.compile_s * 1000:.0f} ms",
        "< 1 s",
    )
    table.add_row("permission decisions per second", f"{report.decisions_per_s:,.0f}", "≥ 100,000")
    table.add_row(
        "field filtering per second (2 rules, small document)", f"{report.filters_per_s:,.0f}", "—"
    )
    for name, value in report.machine.items():
        out.print(f"{name}: {value}", highlight=False)
    out.print(table)


@accounts_app.command("rotate-key")
def accounts_rotate_key(config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """Start signing customer tokens with a new key; tokens of the old one stay valid."""
    settings = _settings(config, data_dir=data_dir)

    async def run() -> str:
        runtime = Runtime.build(settings)
        try:
            await runtime.db.migrate()
            parts = AccountsParts.build(runtime)
            async with runtime.db.transaction() as session:
                return await parts.keys.rotate(session)
        finally:
            await runtime.close()

    out.print(f"new signing key [bold]{_run(run())}[/]; gateways fetch it from the JWKS")
