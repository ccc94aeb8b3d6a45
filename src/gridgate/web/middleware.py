"""Plain ASGI middleware shared by the listeners (other scope types pass through untouched)."""

from __future__ import annotations

import random
import re
import time
from collections.abc import Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gridgate.errors import RequestTooLarge, problem_response
from gridgate.web.metrics import observe_request

__all__ = [
    "API_SECURITY_HEADERS",
    "BodyLimitMiddleware",
    "SecurityHeadersMiddleware",
    "TraceMiddleware",
    "new_trace_id",
    "trace_id_of",
    "wrap_listener",
]

_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")


def trace_id_of(scope: Scope) -> str | None:
    """The trace id the :class:`TraceMiddleware` gave this request."""
    value = scope.get("state", {}).get("trace_id")
    return value if isinstance(value, str) else None


def new_trace_id(traceparent: str | None = None) -> str:
    """The trace id of a W3C ``traceparent`` if it is a valid one, else a new one."""
    if traceparent is not None:
        match = _TRACEPARENT.match(traceparent.strip().lower())
        if match and match.group(1) != "0" * 32:
            return match.group(1)
    # Trace ids need to be unique, not secret: the fast generator will do.
    return f"{random.getrandbits(128):032x}"


class TraceMiddleware:
    """Give every request a trace id (from a W3C ``traceparent`` if sent), echo it as
    ``X-Trace-Id``, and count the request in the listener's metrics."""

    def __init__(self, app: ASGIApp, *, listener: str) -> None:
        self.app = app
        self.listener = listener

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent = next((v for k, v in scope["headers"] if k == b"traceparent"), None)
        trace_id = new_trace_id(sent.decode("latin-1") if sent is not None else None)
        scope.setdefault("state", {})["trace_id"] = trace_id
        started = time.perf_counter()
        status = 500

        async def send_with_trace(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-trace-id", trace_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_trace)
        finally:
            observe_request(self.listener, scope, status, time.perf_counter() - started)


class _BodyTooLargeError(Exception):
    pass


class BodyLimitMiddleware:
    """Refuse bodies over ``max_bytes`` with 413 ``request.too_large``, declared or streamed."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = self.max_bytes + 1
                if declared > self.max_bytes:
                    await self._refuse(scope, receive, send)
                    return
        received = 0
        exceeded = False
        answered = False

        async def counting_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    exceeded = True
                    raise _BodyTooLargeError
            return message

        async def guarded_send(message: Message) -> None:
            # Whatever the app makes of the interrupted body (a parse error, say), the
            # caller is told the real reason: the body was too large.
            nonlocal answered
            if not exceeded:
                await send(message)
            elif not answered:
                answered = True
                await self._refuse(scope, receive, send)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except _BodyTooLargeError:
            if not answered:
                answered = True
                await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        error = RequestTooLarge(f"the body must be at most {self.max_bytes} bytes")
        await problem_response(error, trace_id_of(scope))(scope, receive, send)


#: What a browser should make of an API answer: never a page to render, frame or run scripts
#: in, never sniffed into another type, sent no referrer. A page that needs more (Swagger UI)
#: sends its own Content-Security-Policy, which :class:`SecurityHeadersMiddleware` keeps.
API_SECURITY_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": (
        "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
}


class SecurityHeadersMiddleware:
    """Add ``headers`` to every answer that does not set them itself, and
    ``Cache-Control: no-store`` to answers under ``no_store_prefix`` or to requests that
    carry credentials (``Authorization``), so no browser or proxy keeps a copy of them."""

    def __init__(
        self, app: ASGIApp, *, headers: Mapping[str, str], no_store_prefix: str | None = None
    ) -> None:
        self.app = app
        self.headers = [(name.lower().encode(), value.encode()) for name, value in headers.items()]
        self.no_store_prefix = no_store_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        no_store = (
            self.no_store_prefix is not None and path.startswith(self.no_store_prefix)
        ) or any(name == b"authorization" for name, _ in scope["headers"])

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [(n, v) for n, v in self.headers if n not in present]
                if no_store and b"cache-control" not in present:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def wrap_listener(app: ASGIApp, listener: str, max_body: int) -> ASGIApp:
    """``app`` with the middleware every listener has: trace ids and metrics, body limit."""
    return TraceMiddleware(BodyLimitMiddleware(app, max_bytes=max_body), listener=listener)
