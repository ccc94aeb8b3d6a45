"""A business system that misbehaves on purpose, run as a real process for gateway tests.

``python -m tests.support.upstream NAME`` prints ``PORT`` once it listens. The last path
segment chooses the behaviour: ``ok`` answers JSON (with the headers it received), ``fail``
answers 500, ``slow`` waits 3 s before answering. ``/_count``
tells how many calls reached this instance.
"""

from __future__ import annotations

import asyncio
import socket
import sys

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

NAME = sys.argv[1] if len(sys.argv) > 1 else "upstream"
calls = {"n": 0}


async def handle(request: Request) -> Response:
    if request.url.path == "/_count":
        return JSONResponse({"calls": calls["n"]})
    if request.url.path == "/healthz":  # the engine's active health check: not a call
        return JSONResponse({"status": "ok"})
    calls["n"] += 1
    mode = request.url.path.rstrip("/").rsplit("/", 1)[-1]
    if mode == "fail":
        return JSONResponse({"instance": NAME, "error": "boom"}, status_code=500)
    if mode == "slow":
        await asyncio.sleep(3)
    body = await request.body()
    return JSONResponse(
        {
            "instance": NAME,
            "path": request.url.path,
            "query": request.url.query,
            "headers": dict(request.headers),
            "body": body.decode("utf-8", "replace"),
        },
        headers={"x-trace-id": "upstream-own", "connection": "keep-alive", "x-upstream": NAME},
    )


app = Starlette(routes=[Route("/{path:path}", handle, methods=["GET", "POST", "PUT", "DELETE"])])


def main() -> None:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    print(sock.getsockname()[1], flush=True)  # noqa: T201 - the parent reads the port
    config = uvicorn.Config(app, log_level="error", timeout_keep_alive=65)
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
