"""The Rust data plane (``gridgate._engine``, issue 13): the snapshot compiler and its driver.

Python stays the control plane: :func:`compile_document` turns the gateway's
:class:`~gridgate.gateway.snapshot.Snapshot` plus the registry's instances, the JWKS, the
revoked sessions and the internal-signature keys into one JSON document; :class:`DataPlane`
starts the engine on its own threads and pushes each new document. The engine serves every
request from its current document and never calls back into Python (no GIL on the request
path), as pydantic-core executes what pydantic compiled.

:class:`~gridgate.gateway.plane.EngineListener` runs it on the gateway's socket in
``gridgate up`` and ``gridgate serve gateway`` (docs/decisions.md).
"""

from __future__ import annotations

import itertools
import os
import socket
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import orjson

from gridgate.gateway.snapshot import ChannelView, InterfaceView, Snapshot
from gridgate.internal_auth import InternalKeys
from gridgate.permissions.fields import FieldFilter
from gridgate.pii import MASKS
from gridgate.registry.balancers import Endpoint
from gridgate.settings import Settings

__all__ = [
    "DataPlane",
    "EngineConfig",
    "EngineUnavailable",
    "InstanceLike",
    "compile_document",
    "engine_available",
]

#: Mask functions back to their kind names (the engine has its own implementations).
_MASK_KINDS = {function: kind for kind, function in MASKS.items()}


class EngineUnavailable(RuntimeError):
    """The extension module ``gridgate._engine`` is missing: the package was not built with it."""


def _extension() -> Any:
    try:
        from gridgate import _engine  # type: ignore[attr-defined]  # noqa: PLC0415 - optional
    except ImportError as exc:
        raise EngineUnavailable(
            "gridgate._engine is missing: reinstall gridgate (`make install` builds the engine)"
        ) from exc
    return _engine


def engine_available() -> bool:
    """Whether the extension module can be imported."""
    try:
        _extension()
    except EngineUnavailable:
        return False
    return True


class InstanceLike(Endpoint, Protocol):
    """A registry instance as the engine needs it (``registry.client.InstanceInfo`` fits)."""

    @property
    def healthy(self) -> bool: ...
    @property
    def metadata(self) -> Mapping[str, str]:
        """What the instance registered with: ``version`` (canary routing), ``health_path``."""
        ...


def _channel(view: ChannelView) -> dict[str, Any]:
    return {
        "code": view.code,
        "secret": view.secret,
        "enabled": view.enabled,
        "allowed_ips": [str(network) for network in view.networks],
        "rate_limit_per_s": view.rate_limit_per_s,
    }


def _interface(view: InterfaceView) -> dict[str, Any]:
    return {
        "code": view.code,
        "method": view.method,
        "path": view.path,
        "enabled": view.enabled,
        "requires_client_auth": view.requires_client_auth,
        "min_level": view.min_level,
        "idempotent": view.idempotent,
        "timeout_ms": round(view.timeout_s * 1000),
        "target_service": view.target_service,
        "balancer": view.balancer,
        "rate_limit_per_s": view.rate_limit_per_s,
        "max_concurrency": view.max_concurrency,
        "max_queue": view.max_queue,
        "max_wait_ms": round(view.max_wait_s * 1000),
        "channels": sorted(view.channels),
        "systems": sorted(view.systems),
        "customer_scope": view.customer_scope,
        "client_rate_limit_per_s": view.client_rate_limit_per_s,
        "account_rate_limit_per_s": view.account_rate_limit_per_s,
        "version": view.version,
        "canary": (
            None
            if view.canary_version is None
            else {"version": view.canary_version, "percent": view.canary_percent}
        ),
    }


def _instance(instance: InstanceLike) -> dict[str, Any]:
    return {
        "instance_id": instance.instance_id,
        "host": instance.host,
        "port": instance.port,
        "weight": instance.weight,
        "healthy": instance.healthy,
        "version": instance.metadata.get("version"),
        "health_path": instance.metadata.get("health_path"),
    }


def _plan(node: Any) -> dict[str, Any]:
    """One compiled field-rule node as the engine reads it (kinds by name, not functions)."""
    return {
        "children": {key: _plan(child) for key, child in node.children.items()},
        "each": _plan(node.each) if node.each is not None else None,
        "drop": node.drop,
        "mask": _MASK_KINDS[node.mask] if node.mask is not None else None,
    }


def _filter(flt: FieldFilter) -> dict[str, Any]:
    # The plans are already compiled per level (and merged for channel-specific rules): the
    # engine executes them as they are rather than compiling the rules a second time.
    plans = flt._plans  # the engine's copy of these plans is compiled from them
    return {str(level): _plan(node) for level, node in plans.items()}


def compile_document(
    snapshot: Snapshot,
    *,
    version: int,
    instances: Mapping[str, Sequence[InstanceLike]],
    internal_keys: InternalKeys,
    jwks: Mapping[str, Any] | None = None,
    revoked: Mapping[str, float] | None = None,
) -> bytes:
    """The engine's snapshot document (JSON) for this catalog, registry view and key set."""
    document = {
        "version": version,
        "revision": snapshot.revision,
        "channels": [_channel(view) for view in snapshot.channels.values()],
        # Business systems sign their own calls with their password (X-GG-System).
        "systems": [{"code": v.code, "secret": v.secret} for v in snapshot.systems.values()],
        "interfaces": [_interface(view) for view in snapshot.interfaces.values()],
        "permissions": [
            {"channel": channel, "interface": interface, "min_level": level}
            for (channel, interface), level in snapshot.perm_levels.items()
        ],
        # What components and functions ask on one channel; null refuses there. Unlike a
        # permission, an entry does not close the interface to other channels.
        "levels": [
            {"channel": channel, "interface": interface, "min_level": level}
            for (channel, interface), level in snapshot.levels.items()
        ],
        "filters": [
            {"interface": interface, "channel": channel, "plans": _filter(flt)}
            for (interface, channel), flt in snapshot.filters.items()
        ],
        "instances": {
            service: [_instance(i) for i in found] for service, found in instances.items()
        },
        "jwks": dict(jwks) if jwks is not None else None,
        "revoked": [{"sid": sid, "until": until} for sid, until in (revoked or {}).items()],
        "internal_keys": {
            service: internal_keys.for_service(service).hex() for service in snapshot.services
        },
    }
    return orjson.dumps(document)


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """What the engine is started with (settings.py's ``gateway_*`` and ``token_*``)."""

    host: str = "127.0.0.1"
    port: int = 0
    workers: int | None = None
    max_body_bytes: int = 6 * 1_048_576
    trusted_proxies: tuple[str, ...] = ("127.0.0.1", "::1")
    max_nonces: int = 1_000_000
    token_issuer: str = "gridgate-accounts"  # noqa: S105 - an issuer name, not a secret
    token_audience: str = "gridgate"  # noqa: S105 - an audience name, not a secret
    token_max_lifetime_s: float = 960.0
    client_rate_limit_per_s: int | None = None
    account_rate_limit_per_s: int | None = None
    max_concurrency: int | None = None
    max_queue: int = 0
    max_wait_ms: int = 0
    access_log_dir: Path | None = None
    access_log_fsync: bool = True
    max_connections: int = 16_384
    max_connections_per_address: int = 256
    connection_first_byte_timeout_s: float = 10.0
    request_head_timeout_s: float = 10.0
    keep_alive_under_pressure_s: float = 5.0
    #: Redis mode: nonces, rate windows and revocations shared, access records to the stream.
    redis_url: str | None = None

    @classmethod
    def from_settings(
        cls, settings: Settings, *, port: int | None = None, access_log_dir: Path | None = None
    ) -> EngineConfig:
        """The engine's view of ``settings`` (the gateway listener's port unless given)."""
        return cls(
            host=settings.bind_host,
            port=settings.gateway_port if port is None else port,
            max_body_bytes=settings.gateway_max_body_bytes,
            trusted_proxies=tuple(settings.gateway_trusted_proxies),
            max_nonces=settings.gateway_max_nonces,
            token_issuer=settings.token_issuer,
            token_audience=settings.token_audience,
            token_max_lifetime_s=float(settings.token_max_lifetime_s),
            client_rate_limit_per_s=settings.gateway_client_rate_limit_per_s,
            account_rate_limit_per_s=settings.gateway_account_rate_limit_per_s,
            max_concurrency=settings.gateway_max_concurrency,
            max_queue=settings.gateway_max_queue,
            max_wait_ms=settings.gateway_max_wait_ms,
            access_log_dir=access_log_dir,
            max_connections=settings.gateway_max_connections,
            max_connections_per_address=settings.gateway_max_connections_per_address,
            connection_first_byte_timeout_s=settings.connection_first_byte_timeout_s,
            request_head_timeout_s=settings.request_head_timeout_s,
            keep_alive_under_pressure_s=settings.keep_alive_under_pressure_s,
            redis_url=settings.redis_url,
        )

    def to_json(self) -> str:
        """The JSON the engine's constructor reads."""
        values: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "workers": self.workers,
            "max_body_bytes": self.max_body_bytes,
            "trusted_proxies": list(self.trusted_proxies),
            "max_nonces": self.max_nonces,
            "token_issuer": self.token_issuer,
            "token_audience": self.token_audience,
            "token_max_lifetime_s": self.token_max_lifetime_s,
            "client_rate_limit_per_s": self.client_rate_limit_per_s,
            "account_rate_limit_per_s": self.account_rate_limit_per_s,
            "max_concurrency": self.max_concurrency,
            "max_queue": self.max_queue,
            "max_wait_ms": self.max_wait_ms,
            "access_log_dir": str(self.access_log_dir) if self.access_log_dir else None,
            "access_log_fsync": self.access_log_fsync,
            "max_connections": self.max_connections,
            "max_connections_per_address": self.max_connections_per_address,
            "connection_first_byte_timeout_s": self.connection_first_byte_timeout_s,
            "request_head_timeout_s": self.request_head_timeout_s,
            "keep_alive_under_pressure_s": self.keep_alive_under_pressure_s,
            "redis_url": self.redis_url,
        }
        return orjson.dumps(values).decode()


class DataPlane:
    """One engine: :meth:`start`, :meth:`push` snapshots, :meth:`revoke`, :meth:`stop`."""

    def __init__(self, config: EngineConfig, internal_keys: InternalKeys) -> None:
        self._engine = _extension().Engine(config.to_json())
        self._internal_keys = internal_keys
        self._versions = itertools.count(1)
        self._lock = threading.Lock()
        self.address: tuple[str, int] | None = None

    def start(self, sock: socket.socket | None = None) -> tuple[str, int]:
        """Serve on the engine's threads; the address served. ``sock``: a listening socket
        (the engine serves a duplicate of it; the caller may close its own), else the
        engine binds the config's ``host:port``."""
        fd = os.dup(sock.fileno()) if sock is not None else None
        try:
            host, port = self._engine.start(fd)
        except BaseException:
            if fd is not None:
                os.close(fd)
            raise
        self.address = (str(host), int(port))
        return self.address

    def report_probes(self, *, ready: bool, body: bytes, metrics: str) -> None:
        """What ``/readyz`` answers (and the series ``/metrics`` adds to the engine's) until
        the next report; a report older than 10 s makes the engine answer 503."""
        self._engine.report_probes(ready, body, metrics)

    def push(
        self,
        snapshot: Snapshot,
        *,
        instances: Mapping[str, Sequence[InstanceLike]],
        jwks: Mapping[str, Any] | None = None,
        revoked: Mapping[str, float] | None = None,
    ) -> int:
        """Compile and swap in a new snapshot (atomically, in the engine); its version."""
        with self._lock:  # versions reach the engine in the order they were made
            document = compile_document(
                snapshot,
                version=next(self._versions),
                instances=instances,
                internal_keys=self._internal_keys,
                jwks=jwks,
                revoked=revoked,
            )
            return int(self._engine.load_snapshot(document))

    def revoke(self, session_id: str, until: float) -> None:
        """Refuse a logged-out session's tokens at once (until their expiry)."""
        self._engine.revoke(session_id, until)

    def revoke_all(self, sessions: Iterable[tuple[str, float]]) -> None:
        """Several revocations (a feed's reload)."""
        for session_id, until in sessions:
            self._engine.revoke(session_id, until)

    @property
    def unknown_keys(self) -> int:
        """How many tokens named a signing key the engine's JWKS does not hold."""
        return int(self._engine.unknown_keys)

    def metrics(self) -> str:
        """The engine's Prometheus series (text format)."""
        return str(self._engine.metrics())

    def stop(self, grace_s: float = 5.0) -> None:
        """Stop listening; running requests get ``grace_s`` to finish."""
        self._engine.stop(grace_s)
