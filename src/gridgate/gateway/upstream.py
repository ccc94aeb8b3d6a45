"""Dispatch (服务调度): interface → target service → instance → call, through keep-alive pools.

Instances come from the registry SDK's discovery cache; the interface's balancer picks one,
passive health checks eject instances that keep failing. Connection errors and 5xx answers
are retried once on another instance, but only for idempotent interfaces: a payment is never
sent twice. The interface timeout bounds the whole call, retry included.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Protocol

import structlog

from gridgate.errors import UpstreamBadResponse, UpstreamTimeout, UpstreamUnavailable
from gridgate.gateway.pool import AnswerTooLarge, ConnectFailed, UpstreamError, UpstreamPool
from gridgate.registry.balancers import Balancer, balancer
from gridgate.registry.client import InstanceInfo
from gridgate.registry.outlier import OutlierDetector

__all__ = ["Dispatcher", "InstanceSource", "Outbound", "UpstreamResponse", "answer_headers"]

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
#: Every ``x-gg-*`` header is the gateway's too (:data:`GATEWAY_PREFIX`).
CONSUMED = frozenset({"authorization", "x-forwarded-for", "x-trace-id", "traceparent"})
#: The gateway's own headers: none of the caller's passes (X-GG-Internal included), so every
#: one a business system sees was set and signed by the gateway.
GATEWAY_PREFIX = "x-gg-"
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
    #: The request target: the path as sent, and ``?`` with the query when there is one.
    target: str
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


_DROPPED = HOP_BY_HOP | CONSUMED


def forward_headers(inbound: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Inbound headers minus hop-by-hop ones, those named by ``Connection``, and our own."""
    dropped = _DROPPED
    for name, value in inbound:
        if name == "connection":
            dropped = dropped | {token.strip().lower() for token in value.split(",")}
    return [(n, v) for n, v in inbound if n not in dropped and not n.startswith(GATEWAY_PREFIX)]


def traceparent(trace_id: str) -> str:
    """A W3C traceparent continuing ``trace_id`` with a new span of the gateway."""
    # Span ids need to be unique, not secret: the fast generator will do.
    return f"00-{trace_id}-{random.getrandbits(64):016x}-01"


_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class Dispatcher:
    """Calls business systems for the gateway."""

    def __init__(
        self,
        source: InstanceSource | None = None,
        *,
        pool_per_host: int = 256,
        idle_timeout_s: float = 4.0,
    ) -> None:
        #: Set once discovery has started (the registry may come up after the gateway).
        self.source = source
        self.pool = UpstreamPool(
            per_origin=pool_per_host,
            idle_timeout_s=idle_timeout_s,
            max_answer_bytes=MAX_RESPONSE_BYTES,
        )
        self._balancers: dict[tuple[str, str], Balancer] = {}

    async def close(self) -> None:
        """Close the idle connections."""
        await self.pool.close()

    def _balancer(self, outbound: Outbound) -> Balancer:
        key = (outbound.interface, outbound.balancer)
        found = self._balancers.get(key)
        if found is None:
            found = self._balancers[key] = balancer(outbound.balancer)
        return found

    async def call(self, outbound: Outbound) -> UpstreamResponse:
        """Send ``outbound`` to an instance of its service, retrying once when that is safe.

        Safe means: the interface is idempotent, or nothing was sent (the connection could
        not be opened). A payment whose request reached a business system is never re-sent.
        """
        source = self.source
        if source is None:
            raise UpstreamUnavailable("the service center has not been reached yet")
        loop = self.pool.loop
        deadline = loop.time() + outbound.timeout_s
        attempts = 2
        tried: list[str] = []
        chooser = self._balancer(outbound)
        last: UpstreamResponse | None = None
        head = _request_head(outbound)
        for attempt in range(attempts):
            candidates = source.outlier.eligible(source.instances(outbound.service))
            instance = chooser.pick(candidates, key=outbound.balance_key, exclude=tried)
            if instance is None:
                break
            tried.append(instance.instance_id)
            if deadline <= loop.time():
                raise UpstreamTimeout(f"{outbound.service} did not answer in time")
            source.outlier.record_start(instance.instance_id)
            chooser.acquire(instance.instance_id)
            try:
                raw = await self.pool.request(
                    instance.host,
                    instance.port,
                    head,
                    outbound.body,
                    deadline=deadline,
                    method=outbound.method,
                )
            except TimeoutError:
                source.report(instance.instance_id, ok=False)
                raise UpstreamTimeout(f"{outbound.service} did not answer in time") from None
            except AnswerTooLarge:
                source.report(instance.instance_id, ok=True)
                raise UpstreamBadResponse("the business system's answer is too large") from None
            except UpstreamError as exc:
                source.report(instance.instance_id, ok=False)
                _log.info(
                    "upstream_failed", service=outbound.service, attempt=attempt, error=str(exc)
                )
                if outbound.idempotent or isinstance(exc, ConnectFailed):
                    continue
                break
            finally:
                chooser.release(instance.instance_id)
            answer = UpstreamResponse(
                raw.status, answer_headers(raw.headers), raw.body, instance.instance_id
            )
            source.report(instance.instance_id, ok=answer.status < 500)
            if answer.status >= 500 and outbound.idempotent and attempt + 1 < attempts:
                last = answer
                continue
            return answer
        if last is not None:
            return last
        raise UpstreamUnavailable(f"no instance of {outbound.service} could take the call")


def _request_head(outbound: Outbound) -> str:
    """Request line and headers (the pool adds ``Host`` and the blank line)."""
    lines = [f"{outbound.method} {outbound.target} HTTP/1.1\r\n"]
    lines.extend(f"{name}: {value}\r\n" for name, value in outbound.headers)
    if outbound.body or outbound.method in _BODY_METHODS:
        lines.append(f"content-length: {len(outbound.body)}\r\n")
    return "".join(lines)


def answer_headers(raw: list[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    """The answer's headers to pass on: not hop-by-hop, not the gateway's own."""
    names = _NAMES
    headers = []
    for name, value in raw:
        lowered = names.get(name)
        if lowered is None:
            lowered = name.decode("latin-1").lower()
            if len(names) < _MAX_NAMES:  # business systems use a handful of header names
                names[name] = lowered
        if lowered not in HOP_BY_HOP and lowered not in SET_BY_GATEWAY:
            headers.append((lowered, value.decode("latin-1")))
    return headers


#: Header names as received → lower-case text, learnt as answers come.
_NAMES: dict[bytes, str] = {}
_MAX_NAMES = 4096
