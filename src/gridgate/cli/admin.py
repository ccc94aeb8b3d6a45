"""What the one-shot commands run: migrate, internal-key, operator create, accounts rotate-key.

Imported only when one of them runs (see :mod:`gridgate.cli.common`).
"""

from __future__ import annotations

import base64
import getpass
import sys

import typer

from gridgate.accounts.parts import AccountsParts
from gridgate.cli.common import fail, open_runtime, out, run_coroutine
from gridgate.errors import GridgateError
from gridgate.internal_auth import InternalKeys
from gridgate.logconfig import configure_logging
from gridgate.operators.audit import Actor
from gridgate.operators.schemas import OperatorCreate, Role
from gridgate.operators.services import OperatorService
from gridgate.password_policy import OPERATOR_PASSWORDS
from gridgate.settings import Settings

__all__ = ["internal_key", "migrate", "operator_create", "rotate_key"]


def migrate(settings: Settings, revision: str) -> None:
    """Bring the schema to ``revision`` and say where it is."""
    configure_logging(settings.log_level, settings.log_format)

    async def run() -> str | None:
        async with open_runtime(settings) as runtime:
            await runtime.db.migrate(revision)
            return await runtime.db.current_revision()

    out.print(f"database at revision [bold]{run_coroutine(run())}[/]")


def internal_key(settings: Settings, service: str) -> None:
    """Print the ``X-GG-Internal`` key of ``service``."""
    key = InternalKeys(settings.signing_key).for_service(service)
    # Printed bare, so that it can be piped into the business system's secret store.
    typer.echo(base64.urlsafe_b64encode(key).decode().rstrip("="))


def operator_create(
    settings: Settings, username: str, role: list[str], *, password_stdin: bool
) -> None:
    """Create an operator; the password from standard input or asked for twice."""
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
    # Before touching the database: the service checks again, with the same policy.
    weak = OPERATOR_PASSWORDS.problem(password, username=username)
    if weak is not None:
        raise fail(weak)
    actor = Actor(username=f"cli:{getpass.getuser()}")

    async def run() -> None:
        async with open_runtime(settings) as runtime:
            await runtime.db.migrate()
            async with runtime.db.transaction() as session:
                await OperatorService(session).create(data, actor)

    try:
        run_coroutine(run())
    except GridgateError as exc:
        raise fail(exc.detail) from None
    roles: list[Role] = data.roles
    out.print(f"operator [bold]{username}[/] created with roles {', '.join(roles)}")


def rotate_key(settings: Settings) -> None:
    """Add a new customer-token signing key and make it the current one."""

    async def run() -> str:
        async with open_runtime(settings) as runtime:
            await runtime.db.migrate()
            parts = AccountsParts.build(runtime)
            async with runtime.db.transaction() as session:
                return await parts.keys.rotate(session)

    out.print(f"new signing key [bold]{run_coroutine(run())}[/]; gateways fetch it from the JWKS")
