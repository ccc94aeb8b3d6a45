"""Exact HTTP/1.1 bytes over real sockets: requests written by hand and answers read back, for
the tests of a listener's connection handling."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = [
    "GUARD_S",
    "Answer",
    "read_answer",
    "read_refusal",
    "read_rest",
    "request",
    "until",
]

#: Long enough never to cut a passing test short; a failing one still ends.
GUARD_S = 10
PROBLEM = "application/problem+json"

Reader = asyncio.StreamReader


async def until(condition: Callable[[], bool]) -> None:
    """Let the loop run until ``condition`` holds (or fail after GUARD_S)."""
    deadline = time.monotonic() + GUARD_S
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.001)


@dataclass
class Answer:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = self.all(name)
        assert len(values) <= 1, f"{name} sent {len(values)} times"
        return values[0] if values else None

    def all(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key == name]

    def problem(self) -> dict[str, Any]:
        assert self.header("content-type") == PROBLEM
        document = orjson.loads(self.body)
        assert isinstance(document, dict)
        assert document["status"] == self.status
        return document


async def read_answer(reader: Reader, *, head: bool = False) -> Answer:
    """One answer: status line, headers to the blank line, then content-length bytes."""
    line = await asyncio.wait_for(reader.readline(), GUARD_S)
    assert line.startswith(b"HTTP/1.1 "), line
    assert line.endswith(b"\r\n"), line
    _, status, reason = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
    headers: list[tuple[str, str]] = []
    while True:
        line = await asyncio.wait_for(reader.readline(), GUARD_S)
        assert line.endswith(b"\r\n"), line
        if line == b"\r\n":
            break
        name, _, value = line.decode("latin-1").rstrip("\r\n").partition(":")
        headers.append((name.lower(), value.strip()))
    answer = Answer(int(status), reason, headers, b"")
    length = answer.header("content-length")
    if length is not None and not head:
        answer.body = await asyncio.wait_for(reader.readexactly(int(length)), GUARD_S)
    return answer


async def read_rest(reader: Reader) -> bytes:
    """Whatever the server sends until it closes the connection."""
    return await asyncio.wait_for(reader.read(), GUARD_S)


async def read_refusal(reader: Reader) -> None:
    """A listener's refusal of a new connection: 503 ``flow.overloaded``, then the close."""
    answer = await read_answer(reader)
    assert answer.status == 503
    assert answer.problem()["code"] == "flow.overloaded"
    assert (answer.header("connection"), answer.header("retry-after")) == ("close", "1")
    assert await read_rest(reader) == b""


def request(
    target: str = "/",
    *,
    method: str = "GET",
    headers: Sequence[tuple[str, str]] = (),
    body: bytes | None = None,
    version: str = "1.1",
) -> bytes:
    """A request's bytes: request line, ``host``, ``headers``, a content-length for ``body``."""
    lines = [f"{method} {target} HTTP/{version}", "host: test"]
    lines += [f"{name}: {value}" for name, value in headers]
    if body is not None:
        lines.append(f"content-length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")
