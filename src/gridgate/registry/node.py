"""What a registry node does in the background: announce itself and expire silent instances.

Every node runs both. Sweeping is idempotent in the store, so nodes need no leader: with one
node gone, the others keep sweeping; a new node starts sweeping as soon as it is up.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

from gridgate.registry.interfaces import RegistryStore

__all__ = ["node_tasks"]

_log = structlog.get_logger("gridgate.registry.node")
#: How often silent instances are looked for: a fraction of the unhealthy delay keeps the
#: marking within a second of its due time.
SWEEP_INTERVAL_S = 1.0


async def _every(
    interval_s: float,
    stopping: asyncio.Event,
    step: Callable[[], Coroutine[Any, Any, Any]],
    what: str,
) -> None:
    while not stopping.is_set():
        try:
            await step()
        except Exception as exc:
            _log.warning(
                "registry_task_failed", task=what, error_type=type(exc).__name__, error=str(exc)
            )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), timeout=interval_s)


def node_tasks(
    store: RegistryStore, url: str, *, node_id: str | None = None
) -> list[Callable[[asyncio.Event], Coroutine[Any, Any, None]]]:
    """The background jobs of one registry node reachable at ``url``."""
    node = node_id or secrets.token_hex(6)
    announce_every = store.timings.heartbeat_interval_s

    async def announce(stopping: asyncio.Event) -> None:
        try:
            await _every(
                announce_every, stopping, lambda: store.register_node(node, url), "announce"
            )
        finally:
            with contextlib.suppress(Exception):
                await store.remove_node(node)

    async def sweep(stopping: asyncio.Event) -> None:
        await _every(SWEEP_INTERVAL_S, stopping, store.sweep, "sweep")

    return [announce, sweep]
