"""Helpers to test code that uses the registry SDK, without a server or a database.

::

    async with in_process_registry({"billing": "pw-billing-01"}) as registry:
        client = registry.client(credentials=("billing", "pw-billing-01"))
        async with client.registration("billing", host="10.0.0.7", port=9104):
            ...

A business system owns the service named by its code; give it more with ``services``
(``{"billing": ["billing-api"]}``, as catalog interfaces would). Refused writes are kept in
``registry.auth.refusals``.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpx
from starlette.applications import Starlette

from gridgate.errors import BadCredentials, install_problem_handlers
from gridgate.registry.auth import parse_basic
from gridgate.registry.client import RegistryClient
from gridgate.registry.interfaces import Timings
from gridgate.registry.memory import MemoryRegistryStore
from gridgate.registry.ownership import Ownership, Refusal
from gridgate.registry.routes import registry_routes

__all__ = ["InProcessRegistry", "StaticAuth", "in_process_registry"]

BASE_URL = "http://registry.test"


class StaticAuth:
    """Registry callers from a fixed table of business systems and one read token."""

    def __init__(
        self,
        systems: Mapping[str, str],
        token: str | None = None,
        *,
        services: Mapping[str, Iterable[str]] | None = None,
    ) -> None:
        self.systems = dict(systems)
        self.token = token
        providers: dict[str, set[str]] = {}
        for system, names in (services or {}).items():
            for name in names:
                providers.setdefault(name, set()).add(system)
        self.ownership = Ownership(
            frozenset(self.systems),
            {name: frozenset(found) for name, found in providers.items()},
        )
        #: Every refused write, in order.
        self.refusals: list[Refusal] = []

    async def business_system(self, authorization: str | None) -> str:
        """The code of valid Basic credentials."""
        code, password = parse_basic(authorization)
        expected = self.systems.get(code)
        if expected is None or not hmac.compare_digest(expected.encode(), password.encode()):
            raise BadCredentials("unknown business system or wrong password")
        return code

    async def reader(self, authorization: str | None) -> str:
        """``platform`` for the token, else a business system."""
        scheme, _, value = (authorization or "").partition(" ")
        if scheme.lower() == "bearer" and self.token and hmac.compare_digest(value, self.token):
            return "platform"
        return await self.business_system(authorization)

    async def owns(self, system: str, service: str) -> bool:
        """Whether ``system`` owns ``service`` (the catalog's rule over the fixed tables)."""
        return self.ownership.owns(system, service)

    async def refused(self, refusal: Refusal) -> None:
        """Keep the refusal in :attr:`refusals`."""
        self.refusals.append(refusal)


@dataclass
class InProcessRegistry:
    """A registry API on a memory store, reachable through an in-process transport."""

    store: MemoryRegistryStore
    app: Starlette
    auth: StaticAuth
    transports: list[httpx.ASGITransport] = field(default_factory=list)

    def client(
        self, *, credentials: tuple[str, str] | None = None, token: str | None = None
    ) -> RegistryClient:
        """An SDK client talking to this registry."""
        transport = httpx.ASGITransport(app=self.app)
        self.transports.append(transport)
        return RegistryClient([BASE_URL], credentials=credentials, token=token, transport=transport)


@asynccontextmanager
async def in_process_registry(
    systems: Mapping[str, str],
    *,
    token: str | None = None,
    timings: Timings | None = None,
    clock: Callable[[], float] | None = None,
    services: Mapping[str, Iterable[str]] | None = None,
) -> AsyncIterator[InProcessRegistry]:
    """A throwaway registry for tests; ``clock`` makes expiry testable without sleeping;
    ``services`` names the services each system owns besides the one named by its code."""
    store = MemoryRegistryStore(timings, clock=clock)
    auth = StaticAuth(systems, token, services=services)
    app = Starlette(routes=registry_routes(store, auth))
    install_problem_handlers(app)
    try:
        yield InProcessRegistry(store, app, auth)
    finally:
        await store.close()
