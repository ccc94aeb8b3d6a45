"""Runs the demo business systems as real services: listeners that register in the registry.

``gridgate up`` runs two instances of each system on free ports; ``gridgate serve
demo-<system>`` runs one. Each registers itself through the registry SDK with its business
system's credentials, as a real system would, and deregisters when it stops. Each answers
only calls signed for it (``X-GG-Internal``, :mod:`gridgate.internal_auth`), as a real
system should: the gateway's, and the accounts service's calls to marketing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine, Mapping
from contextlib import AsyncExitStack
from typing import Any

import structlog

from gridgate.demo.data import DemoData
from gridgate.demo.systems import SYSTEMS
from gridgate.internal_auth import (
    MAX_SKEW_S,
    InternalAuthMiddleware,
    InternalKeys,
    InternalVerifier,
)
from gridgate.registry.client import RegistryClient, RegistryUnavailable
from gridgate.server import Listener
from gridgate.web.middleware import wrap_listener

__all__ = ["demo_listeners", "registrations"]

_log = structlog.get_logger("gridgate.demo")
_MAX_BODY = 1_048_576


def demo_listeners(
    data: DemoData,
    host: str,
    *,
    keys: InternalKeys,
    max_skew_s: int = MAX_SKEW_S,
    systems: list[str] | None = None,
    copies: int = 2,
) -> list[Listener]:
    """``copies`` listeners (port 0: a free port each) for every demo system.

    The copies of one system share one app and so one state, like replicas behind one
    database: a payment made on one instance is known to the other. Each system holds only
    its own ``X-GG-Internal`` key, as a real one would.
    """
    listeners: list[Listener] = []
    for code in systems or list(SYSTEMS):
        verifier = InternalVerifier({code: keys.for_service(code)}, max_skew_s=max_skew_s)
        guarded = InternalAuthMiddleware(SYSTEMS[code](data), verifier)
        app = wrap_listener(guarded, f"demo-{code}", _MAX_BODY)
        listeners.extend(Listener(f"demo-{code}", app, host, 0) for _ in range(copies))
    return listeners


def registrations(
    listeners: list[Listener],
    registry_urls: list[str],
    passwords: Mapping[str, str],
    *,
    retry_s: float = 0.5,
) -> Callable[[asyncio.Event], Coroutine[Any, Any, None]]:
    """A background job registering every demo listener until the process stops."""

    async def run(stopping: asyncio.Event) -> None:
        async with AsyncExitStack() as stack:
            clients: dict[str, RegistryClient] = {}
            for listener in listeners:
                code = listener.name.removeprefix("demo-")
                if code not in clients:
                    client = RegistryClient(registry_urls, credentials=(code, passwords[code]))
                    stack.push_async_callback(client.aclose)
                    clients[code] = client
                # The registry may be starting in this very process: try until it answers.
                while not stopping.is_set():
                    try:
                        await stack.enter_async_context(
                            clients[code].registration(
                                code,
                                host=listener.host,
                                port=listener.port,
                                metadata={"system": code, "kind": "demo"},
                            )
                        )
                        break
                    except RegistryUnavailable:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(stopping.wait(), timeout=retry_s)
            _log.info("demo_systems_registered", instances=len(listeners))
            await stopping.wait()

    return run
