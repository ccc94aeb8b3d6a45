"""Dispatch (服务调度): interface → target service → instance → call, through keep-alive pools.

Instances come from the registry SDK's discovery cache; the interface's balancer picks one,
passive health checks eject instances that keep failing. Connection errors and 5xx answers
are retried once on another instance, but only for idempotent interfaces: a payment is never
sent twice. The interface timeout bounds the whole call, retry included.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from typing import Protocol

import aiohttp
import structlog

from gridgate.errors import UpstreamBadResponse, UpstreamTimeout, UpstreamUnavailable
from gridgate.registry.balancers import Balancer, balancer, track
from gridgate.registry.client import InstanceInfo
from gridgate.registry.outlier import OutlierDetector

__all__ = ["Dispatcher", "InstanceSource", "Outbound", "UpstreamResponse"]

_log = structlog.get_logger("gridgate.gateway.upstream")

#: Headers that describe one hop only (RFC 9110 §7.6.1), never forwarded either way.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
#: Inbound headers the gateway consumes or sets itself: a caller must not smuggle them through.
CONSUMED = frozenset(
    {
        "authorization",
        "x-gg-signature",
        "x-gg-nonce",
        "x-gg-timestamp",
        "x-gg-channel",
        "x-gg-account",
        "x-gg-level",
        "x-gg-session",
        "x-forwarded-for",
        "x-trace-id",
        "traceparent",
    }
)
#: Answer headers the gateway sets itself (the trace id is the gateway's, echoed once).
SET_BY_GATEWAY = frozenset({"x-trace-id"})
MAX_RESPONSE_BYTES = 16 * 1024 * 1024


class InstanceSource(Protocol):
    """Where instances come from (the registry SDK's ``Discovery``)."""

    outlier: OutlierDetector

    def instances(self, service: str) -> list[InstanceInfo]:
        """The instances to consider for ``service``."""
        ...

    def report(self, instance_id: str, *, ok: bool) -> None:
        """How a call to an instance went."""
        ...


@dataclass(slots=True)
class Outbound:
    """The request to forward."""

    method: str
    path: str
    raw_query: str
    headers: list[tuple[str, str]]
    body: bytes
    service: str
    balancer: str
    balance_key: str | None
    idempotent: bool
    timeout_s: float
    interface: str


@dataclass(slots=True)
class UpstreamResponse:
    """A business system's answer."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes
    instance: str


def forward_headers(inbound: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Inbound headers minus hop-by-hop ones, those named by ``Connection``, and our own."""
    named = {
        token.strip().lower()
        for name, value in inbound
        if name == "connection"
        for token in value.split(",")
    }
    return [
        (n, v) for n, v in inbound if n not in HOP_BY_HOP and n not in CONSUMED and n not in named
    ]


def traceparent(trace_id: str) -> str:
    """A W3C traceparent continuing ``trace_id`` with a new span of the gateway."""
    return f"00-{trace_id}-{secrets.token_hex(8)}-01"


class Dispatcher:
    """Calls business systems for the gateway."""

    def __init__(self, source: InstanceSource | None = None, *, pool_per_host: int = 256) -> None:
        #: Set once discovery has started (the registry may come up after the gateway).
        self.source = source
        self._pool_per_host = pool_per_host
        self._session: aiohttp.ClientSession | None = None
        self._balancers: dict[tuple[str, str], Balancer] = {}

    async def start(self) -> None:
        """Open the keep-alive pools."""
        connector = aiohttp.TCPConnector(
            limit=0, limit_per_host=self._pool_per_host, keepalive_timeout=60, ttl_dns_cache=60
        )
        self._session = aiohttp.ClientSession(
            connector=connector, auto_decompress=False, skip_auto_headers=("User-Agent",)
        )

    async def close(self) -> None:
        """Close the pools."""
        if self._session is not None:
            await self._session.close()

    def _balancer(self, outbound: Outbound) -> Balancer:
        key = (outbound.interface, outbound.balancer)
        found = self._balancers.get(key)
        if found is None:
            found = self._balancers[key] = balancer(outbound.balancer)
        return found

    async def call(self, outbound: Outbound) -> UpstreamResponse:
        """Send ``outbound`` to an instance of its service, retrying once when that is safe."""
        source = self.source
        if source is None:
            raise UpstreamUnavailable("the service center has not been reached yet")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + outbound.timeout_s
        attempts = 2 if outbound.idempotent else 1
        tried: list[str] = []
        chooser = self._balancer(outbound)
        last: UpstreamResponse | None = None
        for attempt in range(attempts):
            candidates = source.outlier.eligible(source.instances(outbound.service))
            instance = chooser.pick(candidates, key=outbound.balance_key, exclude=tried)
            if instance is None:
                break
            tried.append(instance.instance_id)
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise UpstreamTimeout(f"{outbound.service} did not answer in time")
            source.outlier.record_start(instance.instance_id)
            try:
                with track(chooser, instance.instance_id):
                    answer = await self._send(instance, outbound, remaining)
            except TimeoutError:
                source.report(instance.instance_id, ok=False)
                raise UpstreamTimeout(f"{outbound.service} did not answer in time") from None
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, OSError) as exc:
                source.report(instance.instance_id, ok=False)
                _log.info(
                    "upstream_failed", service=outbound.service, attempt=attempt, error=str(exc)
                )
                continue
            source.report(instance.instance_id, ok=answer.status < 500)
            if answer.status >= 500 and attempt + 1 < attempts:
                last = answer
                continue
            return answer
        if last is not None:
            return last
        raise UpstreamUnavailable(f"no instance of {outbound.service} could take the call")

    async def _send(
        self, instance: InstanceInfo, outbound: Outbound, timeout_s: float
    ) -> UpstreamResponse:
        assert self._session is not None, "Dispatcher.start() was not called"  # noqa: S101
        url = (
            instance.url + outbound.path + (f"?{outbound.raw_query}" if outbound.raw_query else "")
        )
        async with (
            asyncio.timeout(timeout_s),
            self._session.request(
                outbound.method, url, headers=outbound.headers, data=outbound.body or None
            ) as response,
        ):
            body = await response.content.read(MAX_RESPONSE_BYTES + 1)
            if len(body) > MAX_RESPONSE_BYTES:
                raise UpstreamBadResponse("the business system's answer is too large")
            headers = [
                (name.lower(), value)
                for name, value in response.headers.items()
                if name.lower() not in HOP_BY_HOP and name.lower() not in SET_BY_GATEWAY
            ]
            return UpstreamResponse(response.status, headers, body, instance.instance_id)
