"""The log buffer between the log service and the batcher: a Redis Stream, or a local spool.

Both behave like a stream with one consumer group: ``append`` adds records, ``read`` hands a
batch to a consumer (first what it or a dead consumer left unacknowledged), ``ack`` forgets it.
Entry ids grow with each append and sort as text, so a batch's first and last id name it.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import gc
import os
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from itertools import accumulate, islice
from pathlib import Path
from typing import Any, NamedTuple, Protocol, overload

import structlog
from redis.asyncio import Redis
from redis.exceptions import ResponseError

__all__ = [
    "BufferStats",
    "Entry",
    "Lines",
    "LogBuffer",
    "RedisStreamBuffer",
    "SpoolBuffer",
    "StreamReaders",
]

_log = structlog.get_logger("gridgate.logs.buffer")
#: How long a spool write may wait for its sync to disk (Redis's ``appendfsync everysec``).
_SYNC_INTERVAL_S = 1.0


class Entry(NamedTuple):
    """One buffered record: its id in the buffer and its JSON bytes."""

    id: str
    data: bytes


class Lines(Sequence[bytes]):
    """Records already encoded as one block of JSON lines, each ending in a newline.

    No record may contain a newline (orjson never writes one). The spool appends the block as
    it is; anything else sees a sequence of records, split on first use.
    """

    __slots__ = ("_records", "payload", "size")

    def __init__(self, payload: bytes, size: int) -> None:
        self.payload = payload
        self.size = size
        self._records: list[bytes] | None = None

    def _split(self) -> list[bytes]:
        if self._records is None:
            self._records = self.payload.split(b"\n")[:-1]
        return self._records

    def __len__(self) -> int:
        return self.size

    @overload
    def __getitem__(self, index: int) -> bytes: ...

    @overload
    def __getitem__(self, index: slice) -> list[bytes]: ...

    def __getitem__(self, index: int | slice) -> bytes | list[bytes]:
        return self._split()[index]

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._split())


@dataclass(frozen=True, slots=True)
class BufferStats:
    """How much the buffer holds: entries not yet delivered, and delivered but not acked."""

    waiting: int
    pending: int


@dataclass(frozen=True, slots=True)
class StreamReaders:
    """How the batchers (``gridgate serve logs``) keep up with the shared stream."""

    #: Seconds the oldest record not yet taken by a batcher has waited (None: none waits).
    oldest_age_s: float | None
    #: Batchers the consumer group knows, and seconds since the most recent one was last
    #: seen by Redis (None: no batcher ever read the stream).
    consumers: int
    last_seen_s: float | None
    #: The stream's length bound removed records no batcher had read: nobody reads it, or
    #: the batchers fall a whole stream behind. Those records are lost.
    trimmed_unread: bool


class LogBuffer(Protocol):
    """A durable queue of access-log records read by a consumer group."""

    async def append(self, records: Sequence[bytes]) -> None:
        """Add ``records`` (JSON documents) in order."""
        ...

    async def read(self, consumer: str, count: int, *, block_ms: int = 0) -> list[Entry]:
        """Up to ``count`` entries for ``consumer``: unacked ones first, then new ones."""
        ...

    async def ack(self, ids: Sequence[str]) -> None:
        """Forget entries that were durably written elsewhere."""
        ...

    async def stats(self) -> BufferStats:
        """What the buffer holds now."""
        ...

    async def close(self) -> None:
        """Release connections and files."""
        ...


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _stream_id(value: bytes | str) -> tuple[int, int]:
    milliseconds, _, sequence = _text(value).partition("-")
    return int(milliseconds), int(sequence or 0)


class RedisStreamBuffer:
    """The buffer in a Redis Stream shared by every gateway node (cluster mode).

    Trimming is approximate (``MAXLEN ~``): when the batchers fall behind by more than
    ``max_len`` entries the oldest are lost — the bound that keeps Redis's memory finite.
    """

    def __init__(
        self,
        redis: Redis,
        *,
        key: str = "gg:logs",
        group: str = "batchers",
        max_len: int = 1_000_000,
        claim_idle_ms: int = 60_000,
        owns_client: bool = False,
    ) -> None:
        self.redis = redis
        self.key = key
        self.group = group
        self.max_len = max_len
        self.claim_idle_ms = claim_idle_ms
        self._owns_client = owns_client
        self._group_ready = False
        # A restarted consumer first takes back what it read before it died.
        self._recover_from: dict[str, str] = {}
        self._seen: set[str] = set()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RedisStreamBuffer:
        """A buffer on its own client."""
        return cls(Redis.from_url(url), owns_client=True, **options)

    async def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            await self.redis.xgroup_create(self.key, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    async def append(self, records: Sequence[bytes]) -> None:
        """XADD each record, trimming the stream to about ``max_len`` entries."""
        if not records:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for data in records:
                pipe.xadd(self.key, {"r": data}, maxlen=self.max_len, approximate=True)
            await pipe.execute()

    @classmethod
    def _read_answer(cls, answer: Any) -> list[Entry]:
        # RESP2 answers [[key, entries]], RESP3 {key: entries}.
        if not answer:
            return []
        streams = list(answer.values()) if isinstance(answer, dict) else [s[1] for s in answer]
        return cls._entries(streams[0])

    @staticmethod
    def _entries(raw: Any) -> list[Entry]:
        entries = []
        for entry_id, fields in raw:
            if fields is None:  # trimmed away while pending
                continue
            data = fields.get(b"r", fields.get("r"))
            if data is not None:
                entries.append(
                    Entry(_text(entry_id), data if isinstance(data, bytes) else data.encode())
                )
        return entries

    async def read(self, consumer: str, count: int, *, block_ms: int = 0) -> list[Entry]:
        """Own pending entries after a restart, then others' stale ones, then new ones."""
        await self._ensure_group()
        if consumer not in self._seen:
            self._seen.add(consumer)
            self._recover_from[consumer] = "0"
        start = self._recover_from.get(consumer)
        if start is not None:
            # Page through this consumer's own pending entries, once, after a restart.
            answer = await self.redis.xreadgroup(
                self.group, consumer, {self.key: start}, count=count
            )
            entries = self._read_answer(answer)
            if entries:
                self._recover_from[consumer] = entries[-1].id
                return entries
            del self._recover_from[consumer]
        claimed = await self.redis.xautoclaim(
            self.key, self.group, consumer, self.claim_idle_ms, "0-0", count=count
        )
        entries = self._entries(claimed[1])
        if entries:
            return entries
        answer = await self.redis.xreadgroup(
            self.group, consumer, {self.key: ">"}, count=count, block=block_ms or None
        )
        return self._read_answer(answer)

    async def ack(self, ids: Sequence[str]) -> None:
        """XACK the entries (trimming removes them later)."""
        if ids:
            await self.redis.xack(self.key, self.group, *ids)

    async def stats(self) -> BufferStats:
        """The group's lag and pending count."""
        await self._ensure_group()
        groups = await self.redis.xinfo_groups(self.key)
        for group in groups:
            if _text(group["name"]) == self.group:
                lag = group.get("lag")
                waiting = int(lag) if lag is not None else int(await self.redis.xlen(self.key))
                return BufferStats(waiting=waiting, pending=int(group["pending"]))
        return BufferStats(waiting=0, pending=0)

    async def oldest_age_s(self) -> float | None:
        """Seconds since the oldest entry not yet acknowledged was appended (None: none is).

        Entry ids start with the Redis server's clock in ms, compared here with that same
        clock (``TIME``), so the gateway's own clock does not matter. It grows without bound
        while no batcher (``gridgate serve logs``) takes entries.
        """
        await self._ensure_group()
        groups = await self.redis.xinfo_groups(self.key)
        group = next((g for g in groups if _text(g["name"]) == self.group), None)
        if group is None:
            return None
        oldest: list[str] = []
        if int(group["pending"]):
            summary = await self.redis.xpending(self.key, self.group)
            first = summary.get("min")
            if first:
                oldest.append(_text(first))
        undelivered = await self.redis.xrange(
            self.key, min=f"({_text(group['last-delivered-id'])}", count=1
        )
        if undelivered and undelivered[0][0] is not None:
            oldest.append(_text(undelivered[0][0]))
        if not oldest:
            return None
        seconds, micros = await self.redis.time()
        first_ms = min(int(entry_id.partition("-")[0]) for entry_id in oldest)
        return max(0.0, seconds + micros / 1e6 - first_ms / 1000)

    async def readers(self) -> StreamReaders:
        """How the consumer group keeps up: the oldest waiting record's age, its batchers,
        and whether trimming removed records it had not read (Redis 7's stream counters)."""
        age = await self.oldest_age_s()  # creates the group if need be
        info = await self.redis.xinfo_stream(self.key)
        groups = await self.redis.xinfo_groups(self.key)
        group = next((g for g in groups if _text(g["name"]) == self.group), None)
        consumers = await self.redis.xinfo_consumers(self.key, self.group) if group else []
        # ``idle``: since the consumer's last read attempt (Redis 7.2; before: its last read
        # that took entries).
        idle = [int(c["idle"]) for c in consumers]
        added = info.get("entries-added")
        trimmed = added is not None and int(added) > int(info["length"])
        if trimmed and group is not None:
            delivered = _stream_id(group["last-delivered-id"])
            first = info.get("first-entry")
            # Everything before the first entry was trimmed: lost if the group had not got
            # that far (exactly at the boundary it lost nothing, but is a stream behind).
            trimmed = first is None or delivered < _stream_id(first[0])
        return StreamReaders(
            oldest_age_s=age,
            consumers=len(consumers),
            last_seen_s=min(idle) / 1000 if idle else None,
            trimmed_unread=trimmed,
        )

    async def close(self) -> None:
        """Close the client when this buffer made it."""
        if self._owns_client:
            await self.redis.aclose()


_SEGMENT_SUFFIX = ".seg"
_COMMIT_FILE = "committed"
_READ_CHUNK = 8 * 1024 * 1024


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic collection while a batch's entries are made.

    Tens of thousands of new tuples would start several full collections, each walking every
    object of the process (the gateway's too): that cost four times the reading itself. Entries
    hold no cycles; the collector runs again as soon as the batch is made.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _sync_files(paths: list[Path]) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):  # acknowledged and deleted meanwhile
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fdatasync(fd)
            finally:
                os.close(fd)


_PLUS_ONE = (1).__add__  # a line's length and its newline
_OFFSET = "{:020d}".format  # an entry id: the line's offset, sorting as text
_new_entry = partial(tuple.__new__, Entry)  # Entry((id, data)) without Python-level __new__


class SpoolBuffer:
    """The buffer of one process: append-only segment files in the data dir (embedded mode).

    ``append`` writes the records to the segment file before it returns, on the event loop (a
    write to the page cache), so a crash of the process loses nothing the log service handed
    over. With ``fsync`` the file is also synced to disk at most a second later, by a worker
    thread — what Redis calls ``appendfsync everysec``: a power cut loses at most the last
    second, and the gateway never waits for the disk. (Syncing every append from a thread cost
    the gateway's event loop more than all its own work: docs/decisions.md.) Ids are global byte
    offsets; the committed offset — everything before it acknowledged — is kept in a small
    file, and a restart re-delivers everything after it. Segments wholly before it are deleted.
    """

    def __init__(
        self,
        directory: Path,
        *,
        segment_bytes: int = 64 * 1024 * 1024,
        fsync: bool = True,
        follow: bool = False,
    ) -> None:
        self.directory = directory
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        #: Another writer (the gateway's engine) appends the segments: this one reads, acks
        #: and learns the files' ends from the disk at each read; ``append`` is refused.
        self.follow = follow
        self._lock = threading.Lock()
        #: Segments written since their last sync, and the pending sync.
        self._unsynced: set[int] = set()
        self._sync_handle: asyncio.TimerHandle | None = None
        self._sync_task: asyncio.Task[None] | None = None
        self._new_data = asyncio.Event()
        directory.mkdir(parents=True, exist_ok=True)
        self._committed = self._read_commit()
        self._segments = sorted(
            int(p.name.removesuffix(_SEGMENT_SUFFIX)) for p in directory.glob(f"*{_SEGMENT_SUFFIX}")
        )
        if not self._segments:
            self._segments = [self._committed]
        last = self._path(self._segments[-1])
        if follow:  # the writer cuts a torn line itself; only whole lines are ever read
            self._end = self._segments[-1] + (last.stat().st_size if last.exists() else 0)
        else:
            self._end = self._segments[-1] + self._repair_tail(last)
        self._position = max(self._committed, self._segments[0])  # next offset to deliver
        self._delivered: deque[tuple[int, int]] = deque()  # (offset, end) not yet acked
        self._acked: set[int] = set()

    def _path(self, base: int) -> Path:
        return self.directory / f"{base:020d}{_SEGMENT_SUFFIX}"

    def _read_commit(self) -> int:
        path = self.directory / _COMMIT_FILE
        return int(path.read_text().strip() or 0) if path.exists() else 0

    @staticmethod
    def _repair_tail(path: Path) -> int:
        # A crash in the middle of a write leaves a torn last line: it was never acknowledged.
        if not path.exists():
            path.touch()
            return 0
        data = path.read_bytes()
        keep = data.rfind(b"\n") + 1
        if keep != len(data):
            with path.open("r+b") as handle:
                handle.truncate(keep)
        return keep

    def _append_sync(self, records: Sequence[bytes]) -> None:
        with self._lock:
            base = self._segments[-1]
            if self._end - base >= self.segment_bytes:
                base = self._end
                self._segments.append(base)
            if isinstance(records, Lines):
                payload = records.payload
            else:
                payload = b"".join(r.replace(b"\n", b" ") + b"\n" for r in records)
            with self._path(base).open("ab") as handle:
                handle.write(payload)
            self._end += len(payload)
            self._unsynced.add(base)

    def _learn_ends(self) -> None:
        """Follow mode: the segments and the end of the last one as the writer left them."""
        bases = sorted(
            int(p.name.removesuffix(_SEGMENT_SUFFIX))
            for p in self.directory.glob(f"*{_SEGMENT_SUFFIX}")
        )
        if not bases:
            return
        try:
            size = self._path(bases[-1]).stat().st_size
        except FileNotFoundError:  # acknowledged and deleted meanwhile: nothing new
            return
        with self._lock:
            self._segments = bases
            self._end = max(self._end, bases[-1] + size)

    async def append(self, records: Sequence[bytes]) -> None:
        """Append ``records`` to the active segment before returning (synced within 1 s)."""
        if self.follow:
            raise RuntimeError("this spool is written by the gateway engine, not appended to")
        if not records:
            return
        self._append_sync(records)
        self._new_data.set()
        if self.fsync and self._sync_handle is None:
            loop = asyncio.get_running_loop()
            self._sync_handle = loop.call_later(_SYNC_INTERVAL_S, self._start_sync)

    def _start_sync(self) -> None:
        self._sync_handle = None
        if self._sync_task is not None and not self._sync_task.done():
            # The previous sync is still running: try again a little later.
            self._sync_handle = asyncio.get_running_loop().call_later(
                _SYNC_INTERVAL_S, self._start_sync
            )
            return
        bases, self._unsynced = self._unsynced, set()
        self._sync_task = asyncio.get_running_loop().create_task(self._sync(bases))

    async def _sync(self, bases: set[int]) -> None:
        paths = [self._path(base) for base in sorted(bases)]
        try:
            await asyncio.to_thread(_sync_files, paths)
        except OSError as exc:  # the records stay written; the next append tries again
            self._unsynced |= bases
            _log.warning("log_spool_sync_failed", error=str(exc))

    async def sync(self) -> None:
        """Sync what was written now (at shutdown), without waiting for the timer."""
        if self._sync_handle is not None:
            self._sync_handle.cancel()
            self._sync_handle = None
        if self._sync_task is not None:
            await asyncio.shield(self._sync_task)
        if self._unsynced:
            bases, self._unsynced = self._unsynced, set()
            await self._sync(bases)

    def _read_sync(self, count: int) -> list[Entry]:
        # The lock is held only to look at and to move the positions: appends (on the event
        # loop) never wait for the file reads. Only this consumer moves the read position.
        if self.follow:
            self._learn_ends()
        with self._lock:
            position, end, segments = self._position, self._end, list(self._segments)
        entries: list[Entry] = []
        spans: list[tuple[int, int]] = []
        with _gc_paused():
            while len(entries) < count and position < end:
                # A segment ends exactly where the next begins, so this finds the right one.
                index = bisect.bisect_right(segments, position) - 1
                base = segments[index]
                stop = segments[index + 1] if index + 1 < len(segments) else end
                lines = self._lines(base, position, stop, count - len(entries))
                if not lines:
                    break
                # Built by C-level maps, not a Python loop per line: this runs on a worker
                # thread of the gateway, and every bytecode it runs holds the GIL that the
                # event loop needs.
                bounds = list(accumulate(map(_PLUS_ONE, map(len, lines)), initial=position))
                starts = bounds[:-1]
                entries += map(_new_entry, zip(map(_OFFSET, starts), lines, strict=True))
                spans += zip(starts, bounds[1:], strict=True)
                position = bounds[-1]
        self._delivered.extend(spans)
        with self._lock:
            self._position = position
        return entries

    def _lines(self, base: int, position: int, stop: int, count: int) -> list[bytes]:
        """Up to ``count`` whole lines of segment ``base`` from ``position``, before ``stop``."""
        want = min(_READ_CHUNK, stop - position, count * 512 + 4096)
        with self._path(base).open("rb") as handle:
            handle.seek(position - base)
            data = handle.read(want)
            # A line longer than what was read: read on to its end.
            while b"\n" not in data and position + len(data) < stop:
                more = handle.read(min(_READ_CHUNK, stop - position - len(data)))
                if not more:
                    break
                data += more
        lines = data.split(b"\n")
        lines.pop()  # what follows the last newline: part of a line, or nothing
        del lines[count:]
        return lines

    async def read(self, consumer: str, count: int, *, block_ms: int = 0) -> list[Entry]:
        """The next ``count`` undelivered entries, waiting up to ``block_ms`` for some."""
        del consumer  # one process, one consumer: the ack offset is the group's state
        self._new_data.clear()
        entries = await asyncio.to_thread(self._read_sync, count)
        if entries or not block_ms:
            return entries
        try:
            await asyncio.wait_for(self._new_data.wait(), timeout=block_ms / 1000)
        except TimeoutError:
            return []
        return await asyncio.to_thread(self._read_sync, count)

    def _ack_sync(self, ids: Sequence[str]) -> None:
        # Only the consumer (reads and acks, one at a time) keeps the delivery bookkeeping;
        # the lock guards what appends on the event loop share, and is held for no longer
        # than a few list operations, so the gateway never waits on a batch's ack.
        offsets = list(map(int, ids))
        delivered = self._delivered
        count = len(offsets)
        committed = self._committed
        if (
            not self._acked
            and count <= len(delivered)
            and delivered[0][0] == offsets[0]
            and delivered[count - 1][0] == offsets[-1]
        ):
            # The usual case: the oldest batch, acknowledged whole and in order.
            committed = delivered[count - 1][1]
            self._delivered = deque(islice(delivered, count, None))
        else:
            self._acked.update(offsets)
            while delivered and delivered[0][0] in self._acked:
                offset, committed = delivered.popleft()
                self._acked.discard(offset)
        if committed == self._committed:
            return
        tmp = self.directory / f"{_COMMIT_FILE}.tmp"
        tmp.write_text(str(committed))
        tmp.replace(self.directory / _COMMIT_FILE)
        self._committed = committed
        # Whole segments before the commit point are no longer needed.
        done: list[int] = []
        with self._lock:
            while len(self._segments) > 1 and self._segments[1] <= committed:
                done.append(self._segments.pop(0))
        for base in done:
            self._path(base).unlink(missing_ok=True)

    async def ack(self, ids: Sequence[str]) -> None:
        """Acknowledge; the committed offset moves over every acked prefix."""
        if ids:
            await asyncio.to_thread(self._ack_sync, ids)

    async def stats(self) -> BufferStats:
        """Bytes are not records: count lines past the delivery position."""
        return await asyncio.to_thread(self._stats_sync)

    def _stats_sync(self) -> BufferStats:
        if self.follow:
            self._learn_ends()
        with self._lock:  # a snapshot; the files are read without holding up appends
            segments, position, end = list(self._segments), self._position, self._end
        waiting = 0
        for index, base in enumerate(segments):
            stop = segments[index + 1] if index + 1 < len(segments) else end
            start = max(position - base, 0)
            if start >= stop - base:
                continue
            with contextlib.suppress(FileNotFoundError), self._path(base).open("rb") as handle:
                handle.seek(start)
                waiting += handle.read(stop - base - start).count(b"\n")
        return BufferStats(waiting=waiting, pending=len(self._delivered))

    async def close(self) -> None:
        """Sync what is written (files are opened per call: nothing else to release)."""
        await self.sync()
