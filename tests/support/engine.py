"""The gateway's engine on a real socket for tests, as ``gridgate serve gateway`` runs it."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

from gridgate.gateway.plane import EngineListener
from gridgate.web.connections import ConnectionPolicy


@contextlib.asynccontextmanager
async def serving(
    listener: EngineListener, policy: ConnectionPolicy | None = None
) -> AsyncIterator[str]:
    """Serve ``listener`` on a free loopback port with its control-plane jobs; its URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    await listener.start(sock, policy or ConnectionPolicy())
    stopping = asyncio.Event()
    jobs = [asyncio.create_task(job(stopping)) for job in listener.jobs()]
    try:
        yield url
    finally:
        stopping.set()
        await asyncio.gather(*jobs)
        await listener.stop(1)
