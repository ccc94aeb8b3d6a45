"""The clients of ``gridgate bench engine`` that wrk cannot be, on plain asyncio sockets.

- :func:`call_all`: a fixed number of calls over a few keep-alive connections (callgrind
  counts a server's instructions for a known number of requests).
- :func:`hold_idle`: thousands of keep-alive connections, each after one call, held open
  while the caller measures the server (its memory per idle connection).

Answers are read by their ``Content-Length`` (the bench's servers all send one); anything
else is an error, as is a connection the server closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

import uvloop

from gridgate.web.connections import raise_descriptor_limit

__all__ = ["call_all", "content_length", "hold_idle"]

T = TypeVar("T")

#: Connections opened at once by :func:`hold_idle` (the listen backlog is 4,096 or less).
_OPEN_BATCH = 250
_HEAD_LIMIT = 64 * 1024


def content_length(head: bytes) -> int:
    """The ``Content-Length`` of an answer's head (status line and headers, CRLF-separated)."""
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    raise ValueError(f"an answer without Content-Length: {head[:200]!r}")


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> int:
    """Send one request and read its whole answer; the status."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    await reader.readexactly(content_length(head))
    return int(head.split(b" ", 2)[1])


async def _open(
    host: str, port: int, source: str | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(
        host, port, limit=_HEAD_LIMIT, local_addr=(source, 0) if source else None
    )


async def _call_all(
    host: str, port: int, requests: Sequence[bytes], connections: int
) -> Counter[int]:
    pending: Iterator[bytes] = iter(requests)
    statuses: Counter[int] = Counter()

    async def one_connection() -> None:
        reader, writer = await _open(host, port)
        try:
            for request in pending:  # shared: each request is sent once, by whichever is free
                statuses[await _exchange(reader, writer, request)] += 1
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    await asyncio.gather(*(one_connection() for _ in range(connections)))
    return statuses


def call_all(
    host: str, port: int, requests: Sequence[bytes], *, connections: int = 4
) -> Counter[int]:
    """Send every request once over ``connections`` keep-alive connections; answers by status."""
    return uvloop.run(_call_all(host, port, requests, connections))


async def _hold_idle(
    host: str,
    port: int,
    requests: Sequence[bytes],
    sources: Sequence[str],
    while_held: Callable[[], T],
    settle_s: float,
) -> tuple[int, Counter[int], T]:
    held: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    statuses: Counter[int] = Counter()
    addresses = itertools.cycle(sources)

    async def one(request: bytes) -> None:
        reader, writer = await _open(host, port, next(addresses))
        held.append((reader, writer))
        statuses[await _exchange(reader, writer, request)] += 1

    try:
        for start in range(0, len(requests), _OPEN_BATCH):
            batch = requests[start : start + _OPEN_BATCH]
            await asyncio.gather(*(one(request) for request in batch))
        await asyncio.sleep(settle_s)  # the server settles (buffers released after the calls)
        measured = while_held()
        await asyncio.sleep(0.1)  # a close the server sent meanwhile is seen
        still_open = sum(not reader.at_eof() for reader, _ in held)
        return still_open, statuses, measured
    finally:
        for _, writer in held:
            writer.close()


def hold_idle(
    host: str,
    port: int,
    requests: Sequence[bytes],
    while_held: Callable[[], T],
    *,
    sources: Sequence[str] = ("127.0.0.1",),
    settle_s: float = 1.0,
) -> tuple[int, Counter[int], T]:
    """Open one keep-alive connection per request (each sends it and reads the answer), then
    call ``while_held()`` with all of them idle and open; (connections still open, answers
    by status, what ``while_held`` returned). ``sources``: local addresses taken in turn, so
    that a cap per client address is not what is measured."""
    raise_descriptor_limit()
    return uvloop.run(_hold_idle(host, port, requests, sources, while_held, settle_s))
