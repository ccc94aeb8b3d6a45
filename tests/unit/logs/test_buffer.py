"""The buffer contract, run against the spool and against a real Redis Stream."""

from __future__ import annotations

import asyncio

from gridgate.logs.buffer import BufferStats, SpoolBuffer
from gridgate.logs.storage import id_key
from tests.unit.logs.conftest import BufferKit

RECORDS = [f'{{"n":{i}}}'.encode() for i in range(25)]


async def test_reads_in_order_with_growing_ids(kit: BufferKit) -> None:
    buffer = kit.open()
    await buffer.append(RECORDS[:10])
    await buffer.append(RECORDS[10:])
    first = await buffer.read("c1", 15)
    rest = await buffer.read("c1", 100)
    entries = first + rest
    assert [e.data for e in entries] == RECORDS
    keys = [id_key(e.id) for e in entries]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    assert await buffer.read("c1", 10) == []


async def test_acked_entries_are_not_delivered_again_after_a_restart(kit: BufferKit) -> None:
    buffer = kit.open()
    await buffer.append(RECORDS)
    batch = await buffer.read("c1", 10)
    await buffer.ack([e.id for e in batch])
    unacked = await buffer.read("c1", 5)
    assert await buffer.stats() == BufferStats(waiting=10, pending=5)

    restarted = kit.open()
    again = await restarted.read("c1", 100)
    # What was read but never acknowledged comes first, then the rest: nothing lost.
    assert [e.data for e in again[: len(unacked)]] == [e.data for e in unacked]
    more = await restarted.read("c1", 100)
    assert [e.data for e in again + more] == RECORDS[10:]
    await restarted.ack([e.id for e in again + more])
    assert await restarted.stats() == BufferStats(waiting=0, pending=0)
    assert await kit.open().read("c1", 100) == []


async def test_a_blocked_read_wakes_on_append(kit: BufferKit) -> None:
    buffer = kit.open()
    await buffer.read("c1", 10)  # creates the group before the append
    reader = asyncio.create_task(buffer.read("c1", 10, block_ms=10_000))
    await asyncio.sleep(0)
    await buffer.append(RECORDS[:3])
    entries = await asyncio.wait_for(reader, timeout=10)
    assert entries  # woken by the append, long before its 10 s wait
    # A reader may wake on the first of several appended records; the rest follow.
    entries += await buffer.read("c1", 10)
    assert [e.data for e in entries] == RECORDS[:3]


async def test_a_blocked_read_returns_empty_after_its_wait(kit: BufferKit) -> None:
    buffer = kit.open()
    assert await buffer.read("c1", 10, block_ms=50) == []


async def test_spool_drops_a_torn_last_line(kit: BufferKit) -> None:
    buffer = kit.open()
    if not isinstance(buffer, SpoolBuffer):
        return
    await buffer.append(RECORDS[:2])
    segment = sorted(buffer.directory.glob("*.seg"))[-1]
    with segment.open("ab") as handle:
        handle.write(b'{"n":99')  # a crash in the middle of a write
    entries = await kit.open().read("c1", 10)
    assert [e.data for e in entries] == RECORDS[:2]


async def test_spool_deletes_segments_once_acknowledged(kit: BufferKit) -> None:
    buffer = kit.open()
    if not isinstance(buffer, SpoolBuffer):
        return
    for record in RECORDS:
        await buffer.append([record * 20])  # ~200 bytes each: several 600-byte segments
    assert len(list(buffer.directory.glob("*.seg"))) > 2
    entries = await buffer.read("c1", 100)
    await buffer.ack([e.id for e in entries])
    assert len(list(buffer.directory.glob("*.seg"))) == 1
    await buffer.append([b'{"n":"after"}'])
    assert [e.data for e in await kit.open().read("c1", 10)] == [b'{"n":"after"}']
