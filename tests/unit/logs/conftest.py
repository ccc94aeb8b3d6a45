"""Buffers of both kinds behind one fixture, and a reopen that stands for a process restart."""

from __future__ import annotations

import itertools
import shutil
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gridgate.logs.buffer import LogBuffer, RedisStreamBuffer, SpoolBuffer
from gridgate.storage.db import Database
from tests.support.redis import RedisServer

_keys = itertools.count()


@dataclass
class BufferKit:
    """Opens buffers on one storage (a spool dir or a stream key); closes them all at the end."""

    open_one: Callable[[], LogBuffer]
    opened: list[LogBuffer] = field(default_factory=list)

    def open(self) -> LogBuffer:
        buffer = self.open_one()
        self.opened.append(buffer)
        return buffer


@pytest.fixture(params=["spool", "redis"])
async def kit(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BufferKit]:
    if request.param == "spool":
        # Small segments, so the tests cross segment boundaries.
        made = BufferKit(lambda: SpoolBuffer(tmp_path / "spool", segment_bytes=600))
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        key = f"test:logs:{next(_keys)}"
        made = BufferKit(lambda: RedisStreamBuffer.from_url(server.url, key=key))
    yield made
    for buffer in made.opened:
        await buffer.close()


@pytest.fixture
async def sqlite_db(tmp_path: Path, sqlite_template: Path) -> AsyncIterator[Database]:
    """A migrated SQLite database of this test's own."""
    target = tmp_path / "gridgate.db"
    shutil.copy(sqlite_template, target)
    db = Database(f"sqlite+aiosqlite:///{target}")
    yield db
    await db.dispose()


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    """A migrated database on each engine."""
    database = Database(database_url)
    yield database
    await database.dispose()
