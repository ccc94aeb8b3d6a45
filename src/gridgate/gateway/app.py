"""The gateway listener: a plain ASGI app running the stages, then dispatch, then the log.

Starlette is used for the probes only; the request path is hand-written ASGI so that each
request costs a handful of dictionary look-ups before the upstream call.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime

import orjson
import structlog
from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gridgate.errors import GridgateError, RequestTooLarge, problem_body
from gridgate.gateway.accesslog import AccessLogSink, AccessRecord
from gridgate.gateway.flow import Gates
from gridgate.gateway.snapshot import SnapshotHolder
from gridgate.gateway.stages import Exchange, Stage
from gridgate.gateway.upstream import Dispatcher, Outbound, forward_headers, traceparent
from gridgate.permissions.fields import filter_body
from gridgate.web.middleware import trace_id_of

__all__ = ["GatewayApp"]

_log = structlog.get_logger("gridgate.gateway")
_PROBES = frozenset({"/healthz", "/readyz", "/metrics"})

REQUESTS = Counter(
    "gridgate_gateway_requests",
    "Gateway requests by channel, interface and status (codes from the catalog only).",
    ["channel", "interface", "status"],
)
LATENCY = Histogram(
    "gridgate_gateway_request_duration_seconds",
    "Gateway request latency by interface.",
    ["interface"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


def _json(body: dict[str, object]) -> bytes:
    return orjson.dumps(body)


class GatewayApp:
    """The unified service entry (统一服务入口)."""

    def __init__(
        self,
        *,
        holder: SnapshotHolder,
        stages: Sequence[Stage],
        gates: Gates,
        dispatcher: Dispatcher,
        sink: AccessLogSink,
        probes: ASGIApp,
        max_body_bytes: int,
    ) -> None:
        self.holder = holder
        self.stages = list(stages)
        self.gates = gates
        self.dispatcher = dispatcher
        self.sink = sink
        self.probes = probes
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in _PROBES:
            await self.probes(scope, receive, send)
            return
        headers = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope["headers"]]
        client = scope.get("client")
        exchange = Exchange(
            method=scope["method"],
            path=scope.get("raw_path", scope["path"].encode()).decode("latin-1"),
            raw_query=scope.get("query_string", b"").decode("latin-1"),
            headers=dict(headers),
            raw_headers=headers,
            body=b"",
            client_ip=client[0] if client else "",
            trace_id=trace_id_of(scope) or "",
            snapshot=self.holder.current,
        )
        status: int = 500
        code: str | None = None
        out_headers: list[tuple[str, str]] = []
        body = b""
        try:
            exchange.body = await self._read_body(receive)
            for stage in self.stages:
                await stage(exchange)
            status, out_headers, body = await self._dispatch(exchange)
        except GridgateError as error:
            status, code = error.status, error.code
            out_headers = [("content-type", "application/problem+json"), *error.headers.items()]
            body = _json(problem_body(error, exchange.trace_id))
        except Exception as error:  # a bug: answer 500 problem, never a stack trace
            _log.error("gateway_error", trace_id=exchange.trace_id, exc_info=error)
            generic = GridgateError()
            status, code = 500, generic.code
            out_headers = [("content-type", "application/problem+json")]
            body = _json(problem_body(generic, exchange.trace_id))
        await self._answer(send, status, out_headers, body)
        self._record(exchange, status, code, len(body))

    async def _read_body(self, receive: Receive) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message: Message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise RequestTooLarge(f"the body must be at most {self.max_body_bytes} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    async def _dispatch(self, exchange: Exchange) -> tuple[int, list[tuple[str, str]], bytes]:
        interface = exchange.interface
        assert interface is not None  # noqa: S101 - Route runs first
        outbound_headers = forward_headers(exchange.raw_headers)
        channel = exchange.channel.code if exchange.channel is not None else None
        rules = exchange.snapshot.field_filter(interface.code, channel)
        if rules is not None:
            # Field rules read the JSON: ask the business system for an uncompressed answer.
            outbound_headers = [(k, v) for k, v in outbound_headers if k != "accept-encoding"]
            outbound_headers.append(("accept-encoding", "identity"))
        outbound_headers.append(("x-trace-id", exchange.trace_id))
        outbound_headers.append(("traceparent", traceparent(exchange.trace_id)))
        if exchange.client_ip:
            outbound_headers.append(("x-forwarded-for", exchange.client_ip))
        if exchange.channel is not None:
            outbound_headers.append(("x-gg-channel", exchange.channel.code))
        if exchange.claims is not None:
            outbound_headers.append(("x-gg-account", exchange.claims.account_id))
            outbound_headers.append(("x-gg-level", str(exchange.claims.level)))
            outbound_headers.append(("x-gg-session", exchange.claims.session_id))
        outbound = Outbound(
            method=exchange.method,
            path=exchange.path,
            raw_query=exchange.raw_query,
            headers=outbound_headers,
            body=exchange.body,
            service=interface.target_service,
            balancer=interface.balancer,
            balance_key=exchange.params.get("customer_no")
            or (exchange.claims.account_id if exchange.claims else None),
            idempotent=interface.idempotent,
            timeout_s=interface.timeout_s,
            interface=interface.code,
        )
        async with self.gates.slot(
            interface.code,
            limit=interface.max_concurrency,
            max_queue=interface.max_queue,
            max_wait_s=interface.max_wait_s,
        ) as waited_s:
            exchange.queue_wait_s = waited_s
            answer = await self.dispatcher.call(outbound)
        exchange.upstream = answer.instance
        body = answer.body
        if rules is not None:
            # Data control (数据控制): drop and mask fields by the caller's level.
            level = exchange.claims.level if exchange.claims is not None else 0
            content_type = next((v for k, v in answer.headers if k == "content-type"), None)
            body = filter_body(body, content_type, rules, level)
        return answer.status, answer.headers, body

    async def _answer(
        self, send: Send, status: int, headers: list[tuple[str, str]], body: bytes
    ) -> None:
        raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
        raw.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": body})

    def _record(self, exchange: Exchange, status: int, code: str | None, bytes_out: int) -> None:
        interface = exchange.interface.code if exchange.interface else "unmatched"
        channel = exchange.channel.code if exchange.channel else "none"
        elapsed = time.perf_counter() - exchange.started
        REQUESTS.labels(channel, interface, f"{status // 100}xx").inc()
        LATENCY.labels(interface).observe(elapsed)
        self.sink.offer(
            AccessRecord(
                trace_id=exchange.trace_id,
                time=datetime.now(UTC).isoformat(),
                channel=exchange.channel.code if exchange.channel else None,
                interface=exchange.interface.code if exchange.interface else None,
                account=exchange.claims.account_id if exchange.claims else None,
                client_ip=exchange.client_ip or None,
                method=exchange.method,
                status=status,
                code=code,
                latency_ms=round(elapsed * 1000, 3),
                queue_wait_ms=round(exchange.queue_wait_s * 1000, 3),
                upstream=exchange.upstream,
                bytes_in=len(exchange.body),
                bytes_out=bytes_out,
            )
        )
