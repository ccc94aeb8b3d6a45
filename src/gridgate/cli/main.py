"""Typer commands. Each builds the settings once and hands them down."""

from __future__ import annotations

import getpass
import sys
from typing import Annotated

import typer

import gridgate
from gridgate.accounts.parts import AccountsParts
from gridgate.app import ROLES, build_role
from gridgate.cli.bench import bench_app
from gridgate.cli.common import ConfigOpt, DataDirOpt, fail, out, run_coroutine, settings_from
from gridgate.cli.logs import logs_app
from gridgate.demo.data import generate_demo_data
from gridgate.demo.runner import demo_listeners, registrations
from gridgate.demo.seed import demo_passwords, read_demo_file, seed_demo, write_demo_file
from gridgate.demo.systems import SYSTEMS
from gridgate.errors import GridgateError
from gridgate.logconfig import configure_logging
from gridgate.operators.audit import Actor
from gridgate.operators.schemas import OperatorCreate, Role
from gridgate.operators.services import OperatorService
from gridgate.runtime import Runtime
from gridgate.server import Listener, ListenerError, bind, serve
from gridgate.settings import Settings

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
app.add_typer(bench_app, name="bench")


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
    settings = settings_from(config, data_dir=data_dir)
    configure_logging(settings.log_level, settings.log_format)

    async def run() -> str | None:
        runtime = Runtime.build(settings)
        try:
            await runtime.db.migrate(revision)
            return await runtime.db.current_revision()
        finally:
            await runtime.close()

    out.print(f"database at revision [bold]{run_coroutine(run())}[/]")


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
    settings = settings_from(
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
    run_coroutine(_up(settings, ports))


async def _up(settings: Settings, ports: dict[str, int]) -> None:
    runtime = Runtime.build(settings)
    try:
        await runtime.db.migrate()
        accounts = AccountsParts.build(runtime)
        # Every role in this process: the gateway batches and analyses its access log itself,
        # whichever buffer it writes to.
        roles = {
            role: build_role(role, runtime, accounts=accounts, log_pipeline=True) for role in ports
        }
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
            raise fail(str(exc), code=1) from None
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
        raise fail(f"unknown role {role!r}; choose one of {', '.join(_ROLE_NAMES)}")
    settings = settings_from(config, data_dir=data_dir, bind_host=host)
    configure_logging(settings.log_level, settings.log_format)
    if role.startswith("demo-"):
        run_coroutine(_serve_demo(settings, role.removeprefix("demo-"), port or 0))
        return
    chosen = port if port is not None else getattr(settings, f"{role}_port")

    async def run() -> None:
        runtime = Runtime.build(settings)
        try:
            try:
                built = build_role(role, runtime)
            except ValueError as exc:  # settings this role cannot run with
                raise fail(str(exc)) from None
            listener = Listener(role, built.app, settings.bind_host, chosen)
            try:
                bind([listener])
            except ListenerError as exc:
                raise fail(str(exc), code=1) from None
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

    run_coroutine(run())


def _system_password(settings: Settings, system: str) -> str:
    """The password a business system registers with: from settings, else from demo.json."""
    if settings.business_system_password is not None:
        return settings.business_system_password.get_secret_value()
    known = {
        s["code"]: s["password"]
        for s in read_demo_file(settings.data_dir).get("business_systems", [])
    }
    if system not in known:
        raise fail(
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
        raise fail(str(exc), code=1) from None
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
    settings = settings_from(config, data_dir=data_dir)
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Repeat: ") != password:
            raise fail("the passwords differ")
    try:
        data = OperatorCreate.model_validate(
            {"username": username, "password": password, "roles": role}
        )
    except ValueError as exc:
        reasons = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            for e in getattr(exc, "errors", lambda **_: [])(include_input=False)
        )
        raise fail(reasons or "invalid operator") from None
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
        run_coroutine(run())
    except GridgateError as exc:
        raise fail(exc.detail) from None
    roles: list[Role] = data.roles
    out.print(f"operator [bold]{username}[/] created with roles {', '.join(roles)}")


@accounts_app.command("rotate-key")
def accounts_rotate_key(config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """Start signing customer tokens with a new key; tokens of the old one stay valid."""
    settings = settings_from(config, data_dir=data_dir)

    async def run() -> str:
        runtime = Runtime.build(settings)
        try:
            await runtime.db.migrate()
            parts = AccountsParts.build(runtime)
            async with runtime.db.transaction() as session:
                return await parts.keys.rotate(session)
        finally:
            await runtime.close()

    out.print(f"new signing key [bold]{run_coroutine(run())}[/]; gateways fetch it from the JWKS")
