"""The gateway listener: the stages, then dispatch, then the access log, for each request.

:meth:`GatewayApp.handle` takes one whole request from the gateway's HTTP/1.1 server
(:mod:`gridgate.web.http1`) and returns one answer; the same app is also an ASGI app for tests
and embedding. Starlette serves the probes only.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import structlog
from starlette.types import ASGIApp, Receive, Scope, Send

from gridgate.errors import GridgateError
from gridgate.gateway.accesslog import AccessLogSink, AccessRecord, utc_now_iso
from gridgate.gateway.flow import Gates
from gridgate.gateway.snapshot import SnapshotHolder
from gridgate.gateway.stages import Exchange, Stage
from gridgate.gateway.upstream import Dispatcher, Outbound, forward_headers, traceparent
from gridgate.internal_auth import HEADER as INTERNAL_HEADER
from gridgate.internal_auth import InternalSigner
from gridgate.permissions.fields import filter_body
from gridgate.web.http1 import (
    Limits,
    Request,
    Response,
    call_asgi,
    problem_answer,
    request_from_asgi,
    send_asgi,
)
from gridgate.web.metrics import RequestMetrics
from gridgate.web.middleware import new_trace_id

__all__ = ["GatewayApp"]

_log = structlog.get_logger("gridgate.gateway")
_PROBES = frozenset({"/healthz", "/readyz", "/metrics"})

#: Labels come from the catalog and five status classes: a bounded set.
METRICS = RequestMetrics(
    (
        "gridgate_gateway_requests",
        "Gateway requests by channel, interface and status (codes from the catalog only).",
        ("channel", "interface", "status"),
    ),
    (
        "gridgate_gateway_request_duration_seconds",
        "Gateway request latency by interface.",
        ("interface",),
    ),
)


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
        internal_signer: InternalSigner,
        trusted_proxies: Sequence[str] = ("127.0.0.1", "::1"),
    ) -> None:
        self.holder = holder
        self.stages = list(stages)
        self.gates = gates
        self.dispatcher = dispatcher
        self.sink = sink
        self.probes = probes
        self.internal_signer = internal_signer
        self.limits = Limits(max_body_bytes=max_body_bytes)
        self.trusted_proxies = frozenset(trusted_proxies)

    async def handle(self, request: Request) -> Response:
        """Answer one channel request: the stages, dispatch, the access log."""
        if request.path in _PROBES:
            return await call_asgi(self.probes, request)
        headers = dict(request.headers)
        trace_id = new_trace_id(headers.get("traceparent"))
        exchange = Exchange(
            method=request.method,
            path=request.path,
            raw_query=request.query,
            headers=headers,
            raw_headers=request.headers,
            body=request.body,
            client_ip=self._client_ip(request.client_ip, headers.get("x-forwarded-for")),
            trace_id=trace_id,
            snapshot=self.holder.current,
        )
        code: str | None = None
        try:
            if request.rejected is not None:
                raise request.rejected
            for stage in self.stages:
                waiting = stage(exchange)
                if waiting is not None:
                    await waiting
            response = await self._dispatch(exchange)
            response.headers.append(("x-trace-id", trace_id))
        except GridgateError as error:
            code = error.code
            response = problem_answer(error, trace_id)
        except Exception as error:  # a bug: answer 500 problem, never a stack trace
            _log.error("gateway_error", trace_id=trace_id, exc_info=error)
            generic = GridgateError()
            code = generic.code
            response = problem_answer(generic, trace_id)
        self._record(exchange, response.status, code, len(response.body))
        return response

    def _client_ip(self, peer: str, forwarded: str | None) -> str:
        """The caller's address: the peer, or behind trusted proxies the last hop before them
        (uvicorn's rule for ``X-Forwarded-For``)."""
        if forwarded is None or peer not in self.trusted_proxies:
            return peer
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        for hop in reversed(hops):
            if hop not in self.trusted_proxies:
                return hop
        return hops[0] if hops else peer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The same gateway as an ASGI app (for tests and for embedding it elsewhere)."""
        if scope["type"] != "http" or scope["path"] in _PROBES:
            await self.probes(scope, receive, send)
            return
        request = await request_from_asgi(scope, receive, self.limits.max_body_bytes)
        await send_asgi(send, await self.handle(request))

    async def _dispatch(self, exchange: Exchange) -> Response:
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
            # Signed, unlike X-Forwarded-For, which proxies in front of a service may extend.
            outbound_headers.append(("x-gg-client-ip", exchange.client_ip))
        if exchange.channel is not None:
            outbound_headers.append(("x-gg-channel", exchange.channel.code))
        if exchange.claims is not None:
            outbound_headers.append(("x-gg-account", exchange.claims.account_id))
            outbound_headers.append(("x-gg-level", str(exchange.claims.level)))
            outbound_headers.append(("x-gg-session", exchange.claims.session_id))
        # Signed as the pool sends it (the canonical query when the request was signed).
        target = exchange.path + (f"?{exchange.raw_query}" if exchange.raw_query else "")
        outbound_headers.append(
            (
                INTERNAL_HEADER,
                self.internal_signer.sign(
                    interface.target_service, exchange.method, target, outbound_headers
                ),
            )
        )
        outbound = Outbound(
            method=exchange.method,
            target=target,
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
        held = await self.gates.enter(
            interface.code,
            limit=interface.max_concurrency,
            max_queue=interface.max_queue,
            max_wait_s=interface.max_wait_s,
        )
        exchange.queue_wait_s = held.waited_s
        try:
            answer = await self.dispatcher.call(outbound)
        finally:
            self.gates.leave(held)
        exchange.upstream = answer.instance
        body = answer.body
        if rules is not None:
            # Data control (数据控制): drop and mask fields by the caller's level.
            level = exchange.claims.level if exchange.claims is not None else 0
            content_type = next((v for k, v in answer.headers if k == "content-type"), None)
            body = filter_body(body, content_type, rules, level)
        return Response(answer.status, answer.headers, body)

    def _record(self, exchange: Exchange, status: int, code: str | None, bytes_out: int) -> None:
        interface = exchange.interface.code if exchange.interface else "unmatched"
        channel = exchange.channel.code if exchange.channel else "none"
        elapsed = time.perf_counter() - exchange.started
        METRICS.observe((channel, interface, f"{status // 100}xx"), (interface,), elapsed)
        self.sink.offer(
            AccessRecord(
                trace_id=exchange.trace_id,
                time=utc_now_iso(),
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
