"""Client SDK of the service center (注册中心客户端): register, heartbeat, discover, balance.

A business system keeps its instance registered::

    client = RegistryClient(["http://10.0.0.5:8070"], credentials=("billing", password))
    async with client.registration("billing", host="10.0.1.7", port=9104):
        ...  # heartbeats run in the background; the instance is removed on exit

A caller discovers and balances::

    discovery = Discovery(client, services=["billing"], snapshot_path=Path("registry.json"))
    await discovery.start()
    instance = discovery.choose("billing", key=customer_no)
    ...
    discovery.report(instance.instance_id, ok=True)

The client knows one or more nodes (``GRIDGATE_REGISTRY_URLS``) and learns the others from
``/registry/v1/nodes``; a failed node is skipped for the next. Discovery answers from a local
cache kept fresh by the watch long-poll; when every node is down it goes on answering from the
last known instances and keeps them in a snapshot file, so a restart during the outage still
finds its peers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
from collections.abc import AsyncIterator, Collection, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import structlog

from gridgate.registry.balancers import Balancer, balancer
from gridgate.registry.outlier import OutlierDetector

__all__ = ["Discovery", "InstanceInfo", "Registration", "RegistryClient", "RegistryUnavailable"]

_log = structlog.get_logger("gridgate.registry.client")
_API = "/registry/v1"
#: How often a watching client asks which registry nodes are alive.
NODE_REFRESH_S = 30.0


class RegistryUnavailable(Exception):
    """No registry node answered."""


@dataclass(frozen=True, slots=True)
class InstanceInfo:
    """An instance as discovery hands it out."""

    instance_id: str
    service: str
    host: str
    port: int
    weight: int
    zone: str | None
    metadata: dict[str, str]
    healthy: bool

    @property
    def url(self) -> str:
        """``http://host:port`` of the instance."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> InstanceInfo:
        """Build from the API's instance object."""
        return cls(
            instance_id=data["instance_id"],
            service=data["service"],
            host=data["host"],
            port=int(data["port"]),
            weight=int(data["weight"]),
            zone=data.get("zone"),
            metadata=dict(data.get("metadata") or {}),
            healthy=bool(data["healthy"]),
        )


class RegistryClient:
    """HTTP access to the registry nodes, failing over from one node to the next."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        credentials: tuple[str, str] | None = None,
        token: str | None = None,
        timeout_s: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not urls:
            raise ValueError("at least one registry URL is required")
        self._urls = [u.rstrip("/") for u in urls]
        self._current = 0
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        auth = httpx.BasicAuth(*credentials) if credentials else None
        self._http = httpx.AsyncClient(
            auth=auth, headers=headers, timeout=timeout_s, transport=transport
        )

    @property
    def urls(self) -> list[str]:
        """The nodes this client knows, the one in use first."""
        return self._urls[self._current :] + self._urls[: self._current]

    async def request(
        self, method: str, path: str, *, timeout_s: float | None = None, **kwargs: Any
    ) -> httpx.Response:
        """Send to the current node; on a connection error or a 5xx try the others in turn."""
        last: Exception | None = None
        # At least twice: a pooled connection the node closed meanwhile fails once, harmlessly.
        for _ in range(max(2, len(self._urls))):
            url = self._urls[self._current] + path
            try:
                timeout = httpx.Timeout(timeout_s) if timeout_s is not None else None
                answer = await self._http.request(
                    method, url, timeout=timeout or httpx.USE_CLIENT_DEFAULT, **kwargs
                )
            except httpx.TransportError as exc:
                last = exc
            else:
                if answer.status_code < 500:
                    return answer
                last = httpx.HTTPStatusError("node error", request=answer.request, response=answer)
            self._current = (self._current + 1) % len(self._urls)
        raise RegistryUnavailable(f"no registry node answered: {last}") from last

    async def refresh_nodes(self) -> list[str]:
        """Learn the live nodes from the one in use; keep the known ones on failure."""
        answer = await self.request("GET", f"{_API}/nodes")
        answer.raise_for_status()
        learned = [item["url"].rstrip("/") for item in answer.json()["items"]]
        current = self._urls[self._current]
        merged = list(dict.fromkeys([current, *learned, *self._urls]))
        self._urls, self._current = merged, 0
        return merged

    async def register(
        self,
        service: str,
        host: str,
        port: int,
        *,
        weight: int = 100,
        zone: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> tuple[str, float]:
        """Register an instance; its id and the heartbeat interval the registry asks for."""
        body: dict[str, Any] = {"service": service, "host": host, "port": port, "weight": weight}
        if zone is not None:
            body["zone"] = zone
        if metadata:
            body["metadata"] = dict(metadata)
        answer = await self.request("POST", f"{_API}/instances", json=body)
        answer.raise_for_status()
        data = answer.json()
        return data["instance_id"], float(data["heartbeat_interval_s"])

    async def heartbeat(self, instance_id: str) -> bool:
        """Renew an instance; False when the registry no longer knows it (register again)."""
        answer = await self.request("PUT", f"{_API}/instances/{instance_id}/heartbeat")
        if answer.status_code == 404:
            return False
        answer.raise_for_status()
        return True

    async def deregister(self, instance_id: str) -> None:
        """Remove an instance (unknown ones are already gone)."""
        answer = await self.request("DELETE", f"{_API}/instances/{instance_id}")
        if answer.status_code != 404:
            answer.raise_for_status()

    async def instances(
        self, service: str, *, healthy_only: bool = True
    ) -> tuple[int, list[InstanceInfo]]:
        """The registry revision and the service's instances."""
        answer = await self.request(
            "GET",
            f"{_API}/services/{service}/instances",
            params={"healthy_only": str(healthy_only).lower()},
        )
        answer.raise_for_status()
        data = answer.json()
        return int(data["revision"]), [InstanceInfo.from_json(i) for i in data["instances"]]

    async def watch(self, revision: int, *, timeout_s: float = 30.0) -> dict[str, Any]:
        """Changes after ``revision``, waiting up to ``timeout_s`` for one."""
        answer = await self.request(
            "GET",
            f"{_API}/watch",
            params={"revision": revision, "timeout": timeout_s},
            timeout_s=timeout_s + 5,
        )
        answer.raise_for_status()
        data: dict[str, Any] = answer.json()
        return data

    @asynccontextmanager
    async def registration(
        self,
        service: str,
        *,
        host: str,
        port: int,
        weight: int = 100,
        zone: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> AsyncIterator[Registration]:
        """Keep an instance registered while the block runs; deregister on the way out."""
        handle = Registration(
            self, service, host=host, port=port, weight=weight, zone=zone, metadata=metadata
        )
        await handle.start()
        try:
            yield handle
        finally:
            await handle.stop()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()


class Registration:
    """One instance kept alive by a background heartbeat, re-registered after a 404."""

    def __init__(
        self,
        client: RegistryClient,
        service: str,
        *,
        host: str,
        port: int,
        weight: int = 100,
        zone: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        self.client = client
        self.service = service
        self._fields: dict[str, Any] = {
            "host": host,
            "port": port,
            "weight": weight,
            "zone": zone,
            "metadata": metadata,
        }
        self.instance_id: str | None = None
        self.interval_s = 5.0
        self._task: asyncio.Task[None] | None = None

    async def _register(self) -> None:
        self.instance_id, self.interval_s = await self.client.register(
            self.service,
            self._fields["host"],
            self._fields["port"],
            weight=self._fields["weight"],
            zone=self._fields["zone"],
            metadata=self._fields["metadata"],
        )

    async def start(self) -> None:
        """Register now (raising if impossible) and start heartbeating."""
        await self._register()
        self._task = asyncio.create_task(self._beat(), name=f"heartbeat:{self.service}")

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                if self.instance_id is None or not await self.client.heartbeat(self.instance_id):
                    # Removed (expired during a pause, or a registry restart): come back.
                    await self._register()
                    _log.info("registry_reregistered", service=self.service)
            except (RegistryUnavailable, httpx.HTTPError) as exc:
                _log.warning("registry_heartbeat_failed", service=self.service, error=str(exc))

    async def stop(self) -> None:
        """Stop heartbeating and deregister (best effort: the registry expires it anyway)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.instance_id is not None:
            with contextlib.suppress(RegistryUnavailable, httpx.HTTPError):
                await self.client.deregister(self.instance_id)
            self.instance_id = None


class Discovery:
    """A local, watched cache of instances with balancing and passive health checks."""

    def __init__(
        self,
        client: RegistryClient,
        *,
        services: Iterable[str],
        snapshot_path: Path | None = None,
        strategy: str = "round_robin",
        outlier: OutlierDetector | None = None,
        watch_timeout_s: float = 30.0,
        retry_s: float = 1.0,
    ) -> None:
        self.client = client
        self.services = set(services)
        self.snapshot_path = snapshot_path
        self.balancer: Balancer = balancer(strategy)
        self.outlier = outlier or OutlierDetector()
        self.watch_timeout_s = watch_timeout_s
        self.retry_s = retry_s
        self.revision = 0
        self._cache: dict[str, dict[str, InstanceInfo]] = {s: {} for s in self.services}
        #: What ``instances`` answers per service, made once per change of the cache.
        self._views: dict[str, list[InstanceInfo]] = {}
        self._task: asyncio.Task[None] | None = None
        #: Set whenever the cache changes (tests and callers may wait on it).
        self.changed = asyncio.Event()

    def instances(self, service: str) -> list[InstanceInfo]:
        """Healthy instances of ``service`` in address order; all of them if none is healthy.

        The gateway asks for every call it forwards, so the list is made once per change of
        the registry and shared: do not change it.
        """
        found = self._views.get(service)
        if found is None:
            every = sorted(self._cache.get(service, {}).values(), key=lambda i: (i.host, i.port))
            found = self._views[service] = [i for i in every if i.healthy] or every
        return found

    def every(self, service: str) -> list[InstanceInfo]:
        """Every known instance of ``service``, healthy or not, in address order (the engine
        decides itself which serve)."""
        return sorted(self._cache.get(service, {}).values(), key=lambda i: (i.host, i.port))

    def choose(
        self, service: str, *, key: str | None = None, exclude: Collection[str] = ()
    ) -> InstanceInfo | None:
        """An instance to call, by the balancer, skipping ejected ones (and ``exclude``)."""
        return self.balancer.pick(
            self.outlier.eligible(self.instances(service)), key=key, exclude=exclude
        )

    def report(self, instance_id: str, *, ok: bool) -> None:
        """Tell the outlier detector how a call went."""
        if ok:
            self.outlier.record_success(instance_id)
        else:
            self.outlier.record_failure(instance_id)

    async def start(self) -> None:
        """Load every followed service (or the snapshot file if no node answers), then watch."""
        try:
            await self._reload()
        except (RegistryUnavailable, httpx.HTTPError) as exc:
            if not self._load_snapshot():
                raise
            _log.warning("registry_unavailable_using_snapshot", error=str(exc))
        self._task = asyncio.create_task(self._watch(), name="registry-watch")

    async def follow(self, services: Iterable[str]) -> None:
        """Also follow ``services`` (loaded now, then kept fresh by the running watch)."""
        new = set(services) - self.services
        if not new:
            return
        # Followed before loading: changes arriving meanwhile are applied, not skipped.
        self.services |= new
        for service in sorted(new):
            _, found = await self.client.instances(service, healthy_only=False)
            self._cache[service] = {i.instance_id: i for i in found}
        self._updated()

    async def stop(self) -> None:
        """Stop watching."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _reload(self) -> None:
        fresh: dict[str, dict[str, InstanceInfo]] = {}
        revisions = []
        for service in self.services:
            revision, found = await self.client.instances(service, healthy_only=False)
            revisions.append(revision)
            fresh[service] = {i.instance_id: i for i in found}
        self._cache = fresh
        # The lowest revision: changes between the loads are replayed (upserts are idempotent).
        self.revision = min(revisions, default=0)
        self._updated()

    async def _watch(self) -> None:
        learned_at = 0.0
        loop = asyncio.get_running_loop()
        while True:
            if loop.time() - learned_at > NODE_REFRESH_S:
                # Learn the nodes now alive, so that losing the one we know is survivable.
                with contextlib.suppress(
                    RegistryUnavailable, httpx.HTTPError, KeyError, ValueError
                ):
                    await self.client.refresh_nodes()
                learned_at = loop.time()
            try:
                answer = await self.client.watch(self.revision, timeout_s=self.watch_timeout_s)
                if answer["snapshot"]:
                    await self._reload()
                    continue
                self._apply(answer["changes"])
                self.revision = int(answer["revision"])
            except (RegistryUnavailable, httpx.HTTPError, KeyError, ValueError) as exc:
                # Every node down: keep serving what we know, try again shortly.
                _log.warning("registry_watch_failed", error=str(exc))
                await asyncio.sleep(self.retry_s)

    def _apply(self, changes: list[dict[str, Any]]) -> None:
        touched = False
        for change in changes:
            service = change["service"]
            if service not in self.services:
                continue
            entries = self._cache.setdefault(service, {})
            if change["kind"] == "removed" or change["instance"] is None:
                entries.pop(change["instance_id"], None)
                self.outlier.forget(change["instance_id"])
            else:
                entries[change["instance_id"]] = InstanceInfo.from_json(change["instance"])
            touched = True
        if touched:
            self._updated()

    def _updated(self) -> None:
        self._views = {}
        self._save_snapshot()
        self.changed.set()
        self.changed = asyncio.Event()

    def _save_snapshot(self) -> None:
        if self.snapshot_path is None:
            return
        data = {
            "revision": self.revision,
            "services": {
                s: [asdict(i) for i in entries.values()] for s, entries in self._cache.items()
            },
        }
        self.snapshot_path.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename: a crash mid-write must not leave a torn snapshot.
        fd, tmp = tempfile.mkstemp(dir=self.snapshot_path.parent, prefix=".registry-")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle)
        Path(tmp).replace(self.snapshot_path)

    def _load_snapshot(self) -> bool:
        if self.snapshot_path is None or not self.snapshot_path.exists():
            return False
        try:
            data = json.loads(self.snapshot_path.read_text(encoding="utf-8"))
            self._cache = {
                service: {i["instance_id"]: InstanceInfo(**i) for i in items}
                for service, items in data["services"].items()
                if service in self.services
            }
            self._views = {}
            # Watching resumes from 0 once a node is back, reloading if the log is too short.
            self.revision = 0
        except (OSError, ValueError, KeyError, TypeError):
            return False
        return True
