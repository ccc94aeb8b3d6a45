"""The registry store inside one process: ``gridgate up``, single-node set-ups and tests.

Every method runs without awaiting between reading and writing the state, so on one event loop
each call is atomic, as the Lua scripts make the Redis store's calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import replace

from gridgate.registry.interfaces import (
    Change,
    ChangeKind,
    Changes,
    ForeignInstance,
    Instance,
    NodeInfo,
    Registration,
    ServiceSummary,
    Timings,
    UnknownInstance,
    check_service,
    check_threshold,
    protect,
)

__all__ = ["MemoryRegistryStore"]


def _copy(instance: Instance) -> Instance:
    # Instances are frozen but their metadata dict is not: callers get their own.
    return replace(instance, metadata=dict(instance.metadata))


class MemoryRegistryStore:
    """A :class:`~gridgate.registry.interfaces.RegistryStore` kept in this process's memory."""

    def __init__(
        self,
        timings: Timings | None = None,
        *,
        clock: Callable[[], float] | None = None,
        log_size: int = 10_000,
    ) -> None:
        if log_size < 1:
            raise ValueError("log_size must be at least 1")
        self.timings = timings or Timings()
        # Monotonic by default: a wall-clock jump must not expire every instance at once.
        self._clock = clock or time.monotonic
        self._services: dict[str, dict[str, Instance]] = {}
        self._service_of: dict[str, str] = {}
        self._addresses: dict[tuple[str, str, int], str] = {}
        self._thresholds: dict[str, float] = {}
        self._nodes: dict[str, NodeInfo] = {}
        self._revision = 0
        self._log: deque[Change] = deque(maxlen=log_size)
        self._changed = asyncio.Condition()

    def _emit(
        self, kind: ChangeKind, service: str, instance_id: str, *, instance: Instance | None
    ) -> None:
        self._revision += 1
        self._log.append(Change(self._revision, kind, service, instance_id, instance))

    async def _wake_watchers(self) -> None:
        # Called once a method's state changes are all made: acquiring the lock may yield, and
        # another task must never see (or change) the state half-way through a sweep.
        async with self._changed:
            self._changed.notify_all()

    def _save(self, instance: Instance) -> None:
        self._services.setdefault(instance.service, {})[instance.instance_id] = instance
        self._service_of[instance.instance_id] = instance.service
        self._addresses[instance.service, instance.host, instance.port] = instance.instance_id

    def _drop(self, instance: Instance) -> None:
        members = self._services[instance.service]
        del members[instance.instance_id]
        if not members:
            del self._services[instance.service]
        del self._service_of[instance.instance_id]
        del self._addresses[instance.service, instance.host, instance.port]

    def _get(self, instance_id: str) -> Instance:
        service = self._service_of.get(instance_id)
        if service is None:
            raise UnknownInstance(instance_id)
        return self._services[service][instance_id]

    async def register(
        self,
        service: str,
        host: str,
        port: int,
        *,
        weight: int = 100,
        zone: str | None = None,
        metadata: Mapping[str, str] | None = None,
        owner: str,
    ) -> Instance:
        """Add an instance, or refresh the one already at ``service`` + ``host:port``."""
        reg = Registration.checked(
            service, host, port, weight=weight, zone=zone, metadata=metadata, owner=owner
        )
        now = self._clock()
        existing_id = self._addresses.get((reg.service, reg.host, reg.port))
        kind: ChangeKind | None
        if existing_id is None:
            kind = "registered"
            instance = Instance(
                instance_id=uuid.uuid4().hex,
                service=reg.service,
                host=reg.host,
                port=reg.port,
                weight=reg.weight,
                zone=reg.zone,
                metadata=reg.metadata,
                healthy=True,
                registered_at=now,
                last_heartbeat=now,
                owner=reg.owner,
            )
        else:
            old = self._services[reg.service][existing_id]
            instance = replace(
                old,
                weight=reg.weight,
                zone=reg.zone,
                metadata=reg.metadata,
                owner=reg.owner,
                healthy=True,
                last_heartbeat=now,
            )
            if (old.weight, old.zone, old.metadata, old.owner) != (
                reg.weight,
                reg.zone,
                reg.metadata,
                reg.owner,
            ):
                kind = "updated"
            else:
                # A restart at the same address is no news unless it had been marked down.
                kind = None if old.healthy else "healthy"
        self._save(instance)
        if kind is not None:
            self._emit(kind, instance.service, instance.instance_id, instance=instance)
            await self._wake_watchers()
        return _copy(instance)

    async def heartbeat(self, instance_id: str, *, owner: str | None = None) -> Instance:
        """Record that the instance is alive; an unhealthy one becomes healthy again."""
        old = self._get(instance_id)
        if owner is not None and old.owner != owner:
            raise ForeignInstance(_copy(old))
        instance = replace(old, healthy=True, last_heartbeat=self._clock())
        self._save(instance)
        if not old.healthy:
            self._emit("healthy", instance.service, instance_id, instance=instance)
            await self._wake_watchers()
        return _copy(instance)

    async def get(self, instance_id: str) -> Instance | None:
        """The instance with this id, or ``None`` if there is none."""
        service = self._service_of.get(instance_id)
        return None if service is None else _copy(self._services[service][instance_id])

    async def deregister(self, instance_id: str) -> None:
        """Remove the instance now (a clean shutdown)."""
        instance = self._get(instance_id)
        self._drop(instance)
        self._emit("removed", instance.service, instance_id, instance=None)
        await self._wake_watchers()

    async def instances(
        self, service: str, *, healthy_only: bool = True
    ) -> tuple[int, list[Instance]]:
        """The current revision and the instances by host and port (none for an unknown service)."""
        found = self._services.get(service, {}).values()
        chosen = protect(
            found, healthy_only=healthy_only, threshold=self._thresholds.get(service, 0.0)
        )
        return self._revision, [_copy(instance) for instance in chosen]

    async def revision(self) -> int:
        """The current revision."""
        return self._revision

    async def services(self) -> list[ServiceSummary]:
        """Every service that has instances, by name."""
        return [
            ServiceSummary(name, len(members), sum(i.healthy for i in members.values()))
            for name, members in sorted(self._services.items())
        ]

    async def configure_service(self, service: str, *, protect_threshold: float) -> None:
        """Set the protection threshold (0–1, default 0) of a service."""
        self._thresholds[check_service(service)] = check_threshold(protect_threshold)

    async def changes_since(self, revision: int, *, limit: int = 1000) -> Changes:
        """The changes after ``revision`` in order, or ``snapshot`` if the log lacks some."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        if revision == self._revision:
            return Changes(revision)
        # Older than the log, or newer than this store has ever been (another store's revision).
        if revision < 0 or revision > self._revision or revision + 1 < self._log[0].revision:
            return Changes(self._revision, snapshot=True)
        # Revisions in the log are consecutive, so the position follows from the first one.
        start = revision + 1 - self._log[0].revision
        picked = list(itertools.islice(self._log, start, start + limit))
        changes = [replace(c, instance=_copy(c.instance) if c.instance else None) for c in picked]
        return Changes(changes[-1].revision, changes)

    async def wait_for_changes(self, revision: int, *, timeout_s: float) -> Changes:
        """Like :meth:`changes_since`, but wait up to ``timeout_s`` for a change if none is new."""
        result = await self.changes_since(revision)
        if result.changes or result.snapshot:
            return result
        # Read again even on a timeout: a change may have landed just as it expired, and
        # answering the new revision without it would lose that change.
        async with self._changed:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await self._changed.wait_for(lambda: self._revision != revision)
        return await self.changes_since(revision)

    async def sweep(self) -> int:
        """Mark silent instances unhealthy and remove expired ones; the number changed."""
        now = self._clock()
        timings = self.timings
        changed = 0
        # Oldest heartbeat first, as the Redis store does, so both logs read alike.
        candidates = sorted(
            (i for members in self._services.values() for i in members.values()),
            key=lambda i: (i.last_heartbeat, i.instance_id),
        )
        for instance in candidates:
            silent_for = now - instance.last_heartbeat
            if silent_for > timings.remove_after_s:
                self._drop(instance)
                self._emit("removed", instance.service, instance.instance_id, instance=None)
            elif silent_for > timings.unhealthy_after_s and instance.healthy:
                down = replace(instance, healthy=False)
                self._save(down)
                self._emit("unhealthy", down.service, down.instance_id, instance=down)
            else:
                continue
            changed += 1
        if changed:
            await self._wake_watchers()
        return changed

    async def register_node(self, node_id: str, url: str) -> None:
        """Announce (or keep alive) a registry node for ``remove_after_s``."""
        self._nodes[node_id] = NodeInfo(node_id, url, self._clock())

    async def nodes(self) -> list[NodeInfo]:
        """The registry nodes alive now, by id."""
        cutoff = self._clock() - self.timings.remove_after_s
        self._nodes = {k: n for k, n in self._nodes.items() if n.last_seen >= cutoff}
        return sorted(self._nodes.values(), key=lambda n: n.node_id)

    async def remove_node(self, node_id: str) -> None:
        """Forget a registry node (it is shutting down)."""
        self._nodes.pop(node_id, None)

    async def ping(self) -> bool:
        """Always true: the state is in this process."""
        return True

    async def close(self) -> None:
        """Nothing to release."""
