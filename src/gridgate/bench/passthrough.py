"""The floor under ``gridgate bench gateway`` (c): the gateway's transport with nothing on it.

``python -m gridgate.bench.passthrough PORT UPSTREAM_PORT`` serves on ``127.0.0.1:PORT`` with
the gateway's own HTTP/1.1 server (:mod:`gridgate.web.http1`) and forwards every request
through its upstream pool (:mod:`gridgate.gateway.pool`) to ``127.0.0.1:UPSTREAM_PORT``: no
routing, no authentication, no flow control, no access log. What (c) costs above this is the
gateway's own work; what this costs above nginx's ``proxy_pass`` is Python's.
"""

from __future__ import annotations

import asyncio
import socket
import sys

import uvloop

from gridgate.gateway.pool import UpstreamPool
from gridgate.gateway.upstream import answer_headers
from gridgate.web.http1 import HttpServer, Limits, Request, Response

__all__ = ["Passthrough"]


class Passthrough:
    """Forwards every request as it came (method, target, body) to one upstream."""

    limits = Limits()

    def __init__(self, upstream_port: int) -> None:
        self.port = upstream_port
        self.pool = UpstreamPool()

    async def handle(self, request: Request) -> Response:
        """The upstream's answer, its headers filtered as the gateway filters them."""
        target = request.path + (f"?{request.query}" if request.query else "")
        head = f"{request.method} {target} HTTP/1.1\r\n"
        if request.body:
            head += f"content-length: {len(request.body)}\r\n"
        answer = await self.pool.request(
            "127.0.0.1",
            self.port,
            head,
            request.body,
            deadline=self.pool.loop.time() + 5,
            method=request.method,
        )
        return Response(answer.status, answer_headers(answer.headers), answer.body)


async def _serve(port: int, upstream_port: int) -> None:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    server = HttpServer(Passthrough(upstream_port))
    await server.start(sock)
    await asyncio.Event().wait()  # until the bench stops the process


def main() -> None:
    """Serve until killed."""
    uvloop.run(_serve(int(sys.argv[1]), int(sys.argv[2])))


if __name__ == "__main__":
    main()
