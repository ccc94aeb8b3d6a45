"""What ``gridgate up`` and ``gridgate serve`` run (imported only when one of them runs)."""

from __future__ import annotations

import gridgate
from gridgate.accounts.parts import AccountsParts
from gridgate.app import ROLES, build_role
from gridgate.cli.common import fail, open_runtime, out, run_coroutine
from gridgate.demo.data import generate_demo_data
from gridgate.demo.runner import demo_listeners, registrations
from gridgate.demo.seed import demo_passwords, read_demo_file, seed_demo, write_demo_file
from gridgate.demo.systems import SYSTEMS
from gridgate.internal_auth import InternalKeys
from gridgate.logconfig import configure_logging
from gridgate.server import Listener, ListenerError, bind, serve
from gridgate.settings import Settings
from gridgate.web.connections import ConnectionBudget

__all__ = ["ROLE_NAMES", "check_role", "serve_role", "up"]

ROLE_NAMES = [*ROLES, *(f"demo-{code}" for code in SYSTEMS)]
#: The banner's last line: what the log lines below it will be.
_LOGS_BELOW = {
    "debug": "Logs below: every line (--log-level debug).",
    "info": "Logs below: warnings, errors, at most one traffic line a minute.",
    "warning": "Logs below: warnings and errors.",
    "error": "Logs below: errors.",
}


def check_role(role: str) -> None:
    """Refuse a role name ``gridgate serve`` does not know."""
    if role not in ROLE_NAMES:
        raise fail(f"unknown role {role!r}; choose one of {', '.join(ROLE_NAMES)}")


def up(settings: Settings) -> None:
    """Every role in one process, the demo systems beside them in development."""
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
    async with open_runtime(settings, redis=True) as runtime:
        await runtime.db.migrate()
        accounts = AccountsParts.build(runtime)
        # Every role in this process: the gateway batches and analyses its access log itself,
        # whichever buffer it writes to.
        roles = {
            role: build_role(role, runtime, accounts=accounts, log_pipeline=True) for role in ports
        }
        # Channels reach the gateway only; the rest is for operators or the platform itself.
        hosts = {"gateway": settings.bind_host, "admin": settings.admin_bind_host}
        listeners = [
            Listener(role, roles[role].app, hosts.get(role, settings.internal_bind_host), port)
            for role, port in ports.items()
        ]
        demo: list[Listener] = []
        data = None if settings.production else generate_demo_data()
        if data is not None:
            demo = demo_listeners(
                data,
                settings.internal_bind_host,
                keys=runtime.internal_keys,
                max_skew_s=settings.internal_auth_max_skew_s,
            )
        try:
            bind([*listeners, *demo])
        except ListenerError as exc:
            raise fail(str(exc), code=1) from None
        # Seeded only once the ports are ours: a failed start must not leave a seed whose
        # secrets never reached demo.json.
        seeded = None if data is None else await seed_demo(runtime, data)
        urls = {lst.name: lst.url for lst in listeners}
        # After the banner the console stays quiet but for the gateway's traffic line a minute
        # (one of its jobs) and warnings.
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
            # The demo systems only: the accounts listener has its own line above.
            shown = [lst.name.removeprefix("demo-") for lst in running if lst in demo]
            out.print(f"  demo      {len(shown)} instances of {', '.join(sorted(set(shown)))}")
            demo_file = write_demo_file(settings.data_dir, urls, seeded)
            note = "demo data seeded" if seeded else "existing data kept"
            out.print(f"  {note}; credentials in [bold]{demo_file.resolve()}[/] (mode 0600)")
        out.print(f"{_LOGS_BELOW[settings.log_level]} Ctrl-C stops.", soft_wrap=True)
        await serve(
            [*listeners, *demo],
            shutdown_timeout_s=settings.shutdown_timeout_s,
            connections=ConnectionBudget.from_settings(settings),
            background=background,
        )


def serve_role(settings: Settings, role: str, port: int | None) -> None:
    """One role on its own listener (``role`` passed :func:`check_role`)."""
    configure_logging(settings.log_level, settings.log_format)
    if role.startswith("demo-"):
        run_coroutine(_serve_demo(settings, role.removeprefix("demo-"), port or 0))
        return
    chosen = port if port is not None else getattr(settings, f"{role}_port")

    async def run() -> None:
        async with open_runtime(settings, redis=True) as runtime:
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
                [listener],
                shutdown_timeout_s=settings.shutdown_timeout_s,
                connections=ConnectionBudget.from_settings(settings),
                background=background,
            )

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
        generate_demo_data(),
        settings.bind_host,
        keys=InternalKeys(settings.signing_key),
        max_skew_s=settings.internal_auth_max_skew_s,
        systems=[system],
        copies=1,
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
        connections=ConnectionBudget.from_settings(settings),
        background=[registrations([listener], registry_urls, {system: password})],
    )
