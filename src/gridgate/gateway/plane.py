"""The gateway listener served by the Rust engine, and the control plane that feeds it.

:class:`EngineListener` is what ``gridgate up`` and ``gridgate serve gateway`` put on the
gateway's socket: :func:`gridgate.server.serve` hands it the bound socket and the listener's
connection policy, and the engine serves every request on its own threads. This module keeps
the engine's snapshot current — the catalog (:class:`SnapshotHolder`), the registry's
instances (:class:`Discovery`), the JWKS keys and the revoked sessions — pushing a new one
whenever one of them changes, and reports readiness and the process's other Prometheus series
every second, which the engine serves on ``/readyz`` and ``/metrics``, and logs the
gateway's one traffic line a minute from the engine's request counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import socket
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Protocol

import orjson
import structlog
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector, CollectorRegistry

from gridgate.gateway.engine import DataPlane, EngineConfig, InstanceLike
from gridgate.gateway.snapshot import Snapshot
from gridgate.web.connections import METRICS as CONNECTION_METRICS
from gridgate.web.connections import ConnectionPolicy
from gridgate.web.health import Check, readiness
from gridgate.web.metrics import RequestMetrics
from gridgate.web.traffic import log_traffic

if TYPE_CHECKING:
    from gridgate.gateway.service import GatewayParts

__all__ = ["EngineListener", "InstanceSource", "copy_request_counts", "request_counts"]

_log = structlog.get_logger("gridgate.gateway")
#: How often readiness and the Python-side series are reported to the engine.
_REPORT_S = 1.0
#: A burst of changes (a catalog import, a registry reload) makes one snapshot, not many.
_SETTLE_S = 0.02
_FAMILY = re.compile(r"^# TYPE (\S+) ", re.MULTILINE)
#: No cap configured: the engine still wants a number.
_UNLIMITED = 1 << 30
#: The engine's request series (engine/src/metrics.rs), as the traffic line reads them.
_REQUESTS = "gridgate_gateway_requests"
_DURATION = "gridgate_gateway_request_duration_seconds"


class InstanceSource(Protocol):
    """Where the engine's instances come from (the registry's :class:`Discovery`)."""

    def every(self, service: str) -> Sequence[InstanceLike]:
        """Every known instance of ``service``, healthy or not."""
        ...


class _Without(Collector):
    """The process's registry without the families the engine renders itself."""

    def __init__(self, names: frozenset[str]) -> None:
        self.names = names

    def collect(self) -> Iterator[Metric]:
        for family in REGISTRY.collect():
            if family.name not in self.names and f"{family.name}_total" not in self.names:
                yield family


def _seconds(value: float) -> float:
    return value if math.isfinite(value) else float(_UNLIMITED)


def request_counts(text: str) -> RequestMetrics:
    """The engine's request counter and latency histogram (``text``: its Prometheus series)
    as a :class:`RequestMetrics` of their own (registered nowhere), for the traffic line."""
    metrics = RequestMetrics(
        (_REQUESTS, "", ("channel", "interface", "status")),
        (_DURATION, "", ("interface",)),
        registry=None,
    )
    copy_request_counts(text, metrics)
    return metrics


def copy_request_counts(text: str, metrics: RequestMetrics) -> None:
    """Set ``metrics`` to the engine's request series in ``text`` (cumulative buckets made
    per-bucket counts, as :class:`RequestMetrics` keeps them)."""
    bounds = metrics.bounds
    counts: dict[tuple[str, ...], int] = {}
    rows: dict[tuple[str, ...], list[float]] = {}
    for family in text_string_to_metric_families(text):
        if family.name == _REQUESTS:
            for sample in family.samples:
                if sample.name == f"{_REQUESTS}_total":
                    labels = sample.labels
                    counted = (labels["channel"], labels["interface"], labels["status"])
                    counts[counted] = int(sample.value)
        elif family.name == _DURATION:
            for sample in family.samples:
                key = (sample.labels.get("interface", ""),)
                row = rows.setdefault(key, [0.0] * (len(bounds) + 2))
                if sample.name == f"{_DURATION}_sum":
                    row[-1] = sample.value
                elif sample.name == f"{_DURATION}_bucket":
                    le = float(sample.labels["le"])
                    if le in bounds:
                        row[bounds.index(le)] = sample.value
                    elif math.isinf(le):
                        row[len(bounds)] = sample.value
    for row in rows.values():  # cumulative → per bucket, from the top down
        for index in range(len(bounds), 0, -1):
            row[index] -= row[index - 1]
    metrics.counts = counts
    metrics.rows = rows


class EngineListener:
    """The gateway's listener: the Rust engine on the socket, fed by this process."""

    def __init__(
        self,
        parts: GatewayParts,
        checks: Mapping[str, Check],
        *,
        source: InstanceSource | None = None,
    ) -> None:
        self.parts = parts
        self.checks = dict(checks)
        #: Where instances come from: the registry's (``parts.discovery``) unless given.
        self.source = source
        self.plane: DataPlane | None = None
        self._dirty = asyncio.Event()
        self._started = asyncio.Event()
        self._pushing = asyncio.Lock()
        self._unknown_keys = 0
        self._registry: CollectorRegistry | None = None
        parts.holder.on_change(self._snapshot_changed)
        parts.revocations.listeners.append(self._revoked)
        verifier = parts.verifier
        if verifier is not None and hasattr(verifier, "on_keys_changed"):
            verifier.on_keys_changed = self._dirty.set

    # -- serve()'s side ---------------------------------------------------------------------

    def config(self, policy: ConnectionPolicy) -> EngineConfig:
        """The engine's configuration: the settings, with the listener's fitted caps."""
        settings = self.parts.runtime.settings
        base = EngineConfig.from_settings(
            settings,
            access_log_dir=None if settings.redis_url else self.parts.spool_directory,
        )
        return replace(
            base,
            max_connections=policy.max_connections or _UNLIMITED,
            max_connections_per_address=policy.max_per_address or _UNLIMITED,
            connection_first_byte_timeout_s=_seconds(policy.first_byte_s),
            request_head_timeout_s=_seconds(policy.head_s),
            keep_alive_under_pressure_s=_seconds(policy.pressure_keep_alive_s),
        )

    async def start(self, sock: socket.socket, policy: ConnectionPolicy) -> None:
        """Start the engine on ``sock`` (bound and listening) with the first snapshot."""
        plane = DataPlane(self.config(policy), self.parts.runtime.internal_keys)
        async with self._pushing:
            await asyncio.to_thread(self._push, plane)
        await asyncio.to_thread(plane.start, sock)
        # The engine serves a duplicate of the socket: this process's copy is not needed.
        sock.close()
        self.plane = plane
        CONNECTION_METRICS.sources.append(self._connection_samples)
        await self._report_once()  # /readyz answers with the checks from the first request
        self._started.set()
        self._dirty.set()  # whatever changed while the engine started

    async def stop(self, timeout_s: float) -> None:
        """Stop accepting; running requests get ``timeout_s`` to finish."""
        if self.plane is not None:
            await asyncio.to_thread(self.plane.stop, timeout_s)
        with contextlib.suppress(ValueError):
            CONNECTION_METRICS.sources.remove(self._connection_samples)

    def _connection_samples(self) -> dict[str, list[tuple[tuple[str, ...], float]]]:
        """The engine's connection series, for the process's own ``/metrics`` (every listener
        of the process in one scrape, as the admin listener shows them)."""
        found: dict[str, list[tuple[tuple[str, ...], float]]] = {}
        if self.plane is None:
            return found
        for family in text_string_to_metric_families(self.plane.metrics()):
            if not family.name.startswith("gridgate_connections_"):
                continue
            found[family.name] = [
                (
                    tuple(sample.labels[k] for k in ("listener", "reason") if k in sample.labels),
                    sample.value,
                )
                for sample in family.samples
                if not sample.name.endswith("_created")
            ]
        return found

    def abort(self) -> None:
        """A second Ctrl-C: close every connection now."""
        if self.plane is not None:
            self.plane.stop(0.0)

    # -- the control plane ------------------------------------------------------------------

    def jobs(self) -> list[Callable[[asyncio.Event], Any]]:
        """Push a snapshot on every change; report readiness and series every second; one
        traffic line a minute in which requests came."""
        counts = request_counts("")

        def refresh() -> None:
            if self.plane is not None:
                copy_request_counts(self.plane.metrics(), counts)

        return [
            self._publish,
            self._report,
            log_traffic(counts, listener="gateway", refresh=refresh),
        ]

    async def _snapshot_changed(self, _snapshot: Snapshot) -> None:
        # At once: a catalog change takes effect when the holder's refresh returns.
        try:
            await self.sync()
        except Exception as exc:  # a bad document: the engine keeps the last good one
            _log.error("engine_snapshot_refused", error=str(exc))

    def _revoked(self, session_id: str, until: float) -> None:
        if self.plane is not None:
            self.plane.revoke(session_id, until)

    def _instances(self, services: Iterable[str]) -> dict[str, list[InstanceLike]]:
        source: InstanceSource | None = self.source or self.parts.discovery
        if source is None:
            return {}
        return {service: list(source.every(service)) for service in sorted(services)}

    async def sync(self) -> None:
        """Push a snapshot of what is known now, and return once the engine serves it."""
        # One push at a time, each reading the state when it runs: a slow push of an older
        # state can never land after a newer one.
        async with self._pushing:
            if self.plane is not None:
                await asyncio.to_thread(self._push, self.plane)

    def _push(self, plane: DataPlane) -> int:
        snapshot = self.parts.holder.current
        verifier = self.parts.verifier
        return plane.push(
            snapshot,
            instances=self._instances(snapshot.services),
            jwks=getattr(verifier, "jwks", None),
            revoked=self.parts.revocations.entries(),
        )

    async def _publish(self, stopping: asyncio.Event) -> None:
        await _first(self._started, stopping)
        watched = self.parts.discovery
        while not stopping.is_set():
            discovery = self.parts.discovery
            waits = [self._dirty, stopping]
            if discovery is not None:
                if discovery is not watched:  # the registry answered since the last push
                    watched = discovery
                    self._dirty.set()
                waits.append(discovery.changed)
            await _first(*waits)
            if stopping.is_set():
                return
            await asyncio.sleep(_SETTLE_S)
            self._dirty.clear()
            try:
                await self.sync()
            except Exception as exc:  # a bad document: the engine keeps the last good one
                _log.error("engine_snapshot_refused", error=str(exc))

    async def _report(self, stopping: asyncio.Event) -> None:
        await _first(self._started, stopping)
        while not stopping.is_set():
            await self._report_once()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=_REPORT_S)

    async def _report_once(self) -> None:
        plane = self.plane
        if plane is None:
            return
        ready, body = await readiness("gateway", self.checks)
        plane.report_probes(ready=ready, body=orjson.dumps(body), metrics=self._series(plane))
        # Tokens signed with a key the engine lacks: a rotation; fetch the JWKS early.
        unknown = plane.unknown_keys
        if unknown != self._unknown_keys:
            self._unknown_keys = unknown
            ask = getattr(self.parts.verifier, "on_unknown_kid", None)
            if ask is not None:
                ask()

    def _series(self, plane: DataPlane) -> str:
        """The process's Prometheus series but those the engine has (log pipeline, jobs…)."""
        if self._registry is None:
            registry = CollectorRegistry(auto_describe=False)
            registry.register(_Without(frozenset(_FAMILY.findall(plane.metrics()))))
            self._registry = registry
        return generate_latest(self._registry).decode()


async def _first(*events: asyncio.Event) -> None:
    """Wait until one of ``events`` is set."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
