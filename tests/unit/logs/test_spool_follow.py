"""The spool the gateway's engine writes, read by the log pipeline (SpoolBuffer(follow=True))."""

from __future__ import annotations

from pathlib import Path

import pytest

from gridgate.logs.buffer import SpoolBuffer


def _segment(directory: Path, base: int) -> Path:
    return directory / f"{base:020d}.seg"


async def test_whole_lines_appended_by_another_writer_are_read_and_acked(
    tmp_path: Path,
) -> None:
    spool = SpoolBuffer(tmp_path, follow=True)
    assert await spool.read("c", 10) == []
    first = _segment(tmp_path, 0)
    # The writer (the engine) appends a whole record and half of the next one.
    with first.open("ab") as out:
        out.write(b'{"n":1}\n{"n":')
    entries = await spool.read("c", 10)
    assert [e.data for e in entries] == [b'{"n":1}']
    assert (await spool.stats()).waiting == 0
    with first.open("ab") as out:
        out.write(b"2}\n")
    size = first.stat().st_size
    # A new segment begins where the last one ended (the engine rolls over at segment_bytes).
    with _segment(tmp_path, size).open("ab") as out:
        out.write(b'{"n":3}\n')
    assert (await spool.stats()).waiting == 2
    more = await spool.read("c", 10)
    assert [e.data for e in more] == [b'{"n":2}', b'{"n":3}']
    await spool.ack([e.id for e in [*entries, *more]])
    # Everything of the first segment is acknowledged: it is gone; the commit is kept.
    assert not first.exists() and _segment(tmp_path, size).exists()
    assert (tmp_path / "committed").read_text() == str(size + 8)
    # A restart reads on from the commit point.
    again = SpoolBuffer(tmp_path, follow=True)
    assert await again.read("c", 10) == []


async def test_a_followed_spool_refuses_appends(tmp_path: Path) -> None:
    spool = SpoolBuffer(tmp_path, follow=True)
    with pytest.raises(RuntimeError, match="engine"):
        await spool.append([b"{}"])
