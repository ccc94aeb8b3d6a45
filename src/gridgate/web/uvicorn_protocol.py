"""uvicorn's httptools protocol under a :class:`~gridgate.web.connections.ConnectionGuard`.

uvicorn has no cap on connections (``limit_concurrency`` answers 503 to requests, after their
connection was accepted and kept), no deadline for a connection that never sends a byte and
none for a request head that never ends. The listeners it serves (admin, registry, accounts,
logs, demo) get the gateway's rules through uvicorn's documented extension point, the protocol
class of ``uvicorn.Config(http=...)``: a connection over a cap is refused before uvicorn sees
it, and the guard's sweep closes the quiet ones.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gridgate.web.connections import HEAD_TIMEOUT, ConnectionGuard

__all__ = ["GuardedHttpToolsProtocol", "guarded_protocol"]


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """One connection of a uvicorn listener, counted and timed by the listener's guard."""

    #: Set on the subclass made for each listener (:func:`guarded_protocol`).
    guard: ConnectionGuard

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.admitted = False
        #: No byte of a request came yet.
        self.fresh = True
        #: When the first byte of the request being read came, until its head is complete.
        self.head_since: float | None = None
        #: Since when nothing is in flight (accepted, or the last answer sent).
        self.quiet_since = self.loop.time()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if not self.guard.admit(self, transport):
            return  # answered 503 and closed: uvicorn never counts it
        self.admitted = True
        super().connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.admitted:
            return
        self.guard.release(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.admitted:
            super().data_received(data)

    def on_message_begin(self) -> None:
        self.fresh = False
        self.head_since = self.loop.time()
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self.head_since = None
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        self.quiet_since = self.loop.time()
        super().on_response_complete()

    def sweep(self, now: float) -> None:
        """Close the connection when the guard's deadline for what it waits for passed."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        busy = bool(self.pipeline) or (self.cycle is not None and not self.cycle.response_complete)
        if busy:
            return  # the app is answering: its own timeouts apply
        if self.head_since is not None:
            if now - self.head_since > self.guard.policy.head_s:
                self.guard.closed_early("head")
                transport.write(HEAD_TIMEOUT)
                transport.close()
            return
        limit, reason = self.guard.idle_deadline(self.timeout_keep_alive, fresh=self.fresh)
        if reason is not None and now - self.quiet_since > limit:
            # uvicorn's own keep-alive timer closes the others, after ``timeout_keep_alive``.
            self.guard.closed_early(reason)
            transport.close()


def guarded_protocol(guard: ConnectionGuard) -> type[GuardedHttpToolsProtocol]:
    """The protocol class for ``uvicorn.Config(http=...)`` of the listener ``guard`` keeps."""
    return type(
        f"GuardedHttpToolsProtocol[{guard.listener}]", (GuardedHttpToolsProtocol,), {"guard": guard}
    )
