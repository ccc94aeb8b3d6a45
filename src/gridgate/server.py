"""Runs one or more listeners on one event loop and stops them together on a signal."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import socket
import sys
from collections.abc import Callable, Coroutine, Generator, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeAlias, runtime_checkable

import structlog
import uvicorn
from starlette.types import ASGIApp

from gridgate.web.connections import ConnectionBudget, ConnectionGuard, ConnectionPolicy
from gridgate.web.uvicorn_protocol import guarded_protocol

__all__ = [
    "Listener",
    "ListenerApp",
    "ListenerError",
    "SelfServed",
    "bind",
    "serve",
    "tune_for_serving",
]

_log = structlog.get_logger("gridgate.server")
#: Allocations between two collections of the youngest generation (CPython's default: 700).
_GC_FIRST_GENERATION = 50_000
#: How long the event loop may wait for the GIL while a worker thread computes (the log
#: batcher decoding a batch, the analysis): Python's default is 5 ms, a p99 of its own.
_SWITCH_INTERVAL_S = 0.001
#: Longer than any client's idle time between calls (registry heartbeats every 5 s): a
#: connection closed by the server just as a client reuses it fails that call.
KEEP_ALIVE_S = 65.0
#: Connections the kernel queues for a listener before it accepts them.
BACKLOG = 2048


def tune_for_serving() -> None:
    """Set the cyclic collector and the GIL's switch interval up for serving.

    What start-up made (modules, apps, settings) lives as long as the process: the collector
    need not walk it again, which cut its longest pause in the gateway from ~150 ms to ~8 ms
    (docs/decisions.md). A larger first generation means far fewer collections: a request's
    objects are freed by reference counting long before. Worker threads (the log batcher,
    the analysis) give the GIL back to the event loop within 1 ms instead of 5.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(_GC_FIRST_GENERATION, *gc.get_threshold()[1:])
    sys.setswitchinterval(_SWITCH_INTERVAL_S)


class ListenerError(Exception):
    """A listener could not be opened (port taken, address not available …)."""


@runtime_checkable
class SelfServed(Protocol):
    """A listener that serves its socket itself: the gateway's Rust engine."""

    async def start(self, sock: socket.socket, policy: ConnectionPolicy) -> None:
        """Serve ``sock`` (bound and listening) within ``policy``'s caps."""

    async def stop(self, timeout_s: float) -> None:
        """Stop accepting; running requests get ``timeout_s`` to finish."""

    def abort(self) -> None:
        """Close every connection now."""


#: What a listener serves: an ASGI app (uvicorn) or a :class:`SelfServed` listener.
ListenerApp: TypeAlias = ASGIApp | SelfServed


@dataclass(slots=True)
class Listener:
    """One named app on one socket: ASGI (served by uvicorn) or a :class:`SelfServed` listener
    (the gateway's engine)."""

    name: str
    app: ListenerApp
    host: str
    port: int
    sock: socket.socket | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """Where the listener answers."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


def bind(listeners: Iterable[Listener]) -> None:
    """Open every listener's socket now, so a taken port fails before anything starts and
    port 0 resolves to the free port the system picked."""
    opened: list[socket.socket] = []
    try:
        for listener in listeners:
            family = socket.AF_INET6 if ":" in listener.host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            opened.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((listener.host, listener.port))
            except OSError as exc:
                raise ListenerError(
                    f"the {listener.name} listener cannot use {listener.host}:{listener.port}: "
                    f"{exc.strerror}"
                ) from None
            # Listening from now on: a caller that comes before the server starts waits in
            # the backlog instead of being refused.
            sock.listen(BACKLOG)
            listener.sock = sock
            listener.port = sock.getsockname()[1]
    except ListenerError:
        for sock in opened:
            sock.close()
        raise


class _QuietServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to :func:`serve` (one for all listeners)
    and sweeps its connections' deadlines once a second."""

    def __init__(self, config: uvicorn.Config, guard: ConnectionGuard) -> None:
        super().__init__(config)
        self.guard = guard

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield

    async def on_tick(self, counter: int) -> bool:
        """uvicorn's tick (every 0.1 s), and the guard's sweep every tenth."""
        if counter % 10 == 0:
            self.guard.sweep(asyncio.get_running_loop().time())
        return await super().on_tick(counter)


async def serve(
    listeners: list[Listener],
    *,
    shutdown_timeout_s: float,
    connections: ConnectionBudget,
    background: Iterable[Callable[[asyncio.Event], Coroutine[Any, Any, None]]] = (),
) -> None:
    """Serve every (already bound) listener until SIGINT/SIGTERM, then stop within the timeout.

    The process's descriptor limit is raised first, and each listener's connection caps fitted
    below it (``connections``). ``background`` tasks get an event set at shutdown and should
    return soon after.
    """
    policies = connections.plan([listener.name for listener in listeners])
    servers = []
    engines: list[tuple[SelfServed, Listener, ConnectionPolicy]] = []
    guards: list[ConnectionGuard] = []
    for listener, policy in zip(listeners, policies, strict=True):
        if isinstance(listener.app, SelfServed):  # it enforces the policy itself
            engines.append((listener.app, listener, policy))
            continue
        guard = ConnectionGuard(listener.name, policy)
        guards.append(guard)
        config = uvicorn.Config(
            listener.app,
            # httptools, with the listener's connection caps and deadlines.
            http=guarded_protocol(guard),
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            timeout_keep_alive=int(KEEP_ALIVE_S),
            timeout_graceful_shutdown=max(1, int(shutdown_timeout_s)),
        )
        servers.append((_QuietServer(config, guard), listener))
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()

    def stop() -> None:
        if stopping.is_set():
            for server, _ in servers:  # a second Ctrl-C: do not wait for open connections
                server.force_exit = True
            for engine, _, _ in engines:
                engine.abort()
        stopping.set()
        for server, _ in servers:
            server.should_exit = True

    async def serve_engine(
        engine: SelfServed, listener: Listener, policy: ConnectionPolicy
    ) -> None:
        assert listener.sock is not None, "bind() the listeners first"  # noqa: S101
        await engine.start(listener.sock, policy)
        await stopping.wait()
        await engine.stop(shutdown_timeout_s)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    tune_for_serving()  # the sockets listen already: callers queue meanwhile
    tasks = [
        asyncio.create_task(server.serve(sockets=[lst.sock] if lst.sock else None))
        for server, lst in servers
    ]
    tasks += [asyncio.create_task(serve_engine(*engine)) for engine in engines]
    tasks += [asyncio.create_task(job(stopping)) for job in background]
    try:
        await asyncio.gather(*tasks)
    finally:
        for guard in guards:
            guard.close()
        gc.unfreeze()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        _log.info("stopped", listeners=[lst.name for lst in listeners])
