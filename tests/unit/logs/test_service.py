"""The log service never blocks, counts what it drops, and the assembled jobs move records."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import orjson
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import func, select

from gridgate.gateway.service import GatewayParts
from gridgate.logs.buffer import RedisStreamBuffer, SpoolBuffer
from gridgate.logs.models import TrafficHour
from gridgate.logs.service import LogParts, LogService
from gridgate.runtime import Runtime
from tests.conftest import make_settings
from tests.support.redis import RedisServer
from tests.unit.logs.helpers import record


class FlakyBuffer(SpoolBuffer):
    """A spool that refuses appends while ``failing`` (Redis away, disk full)."""

    failing = False

    async def append(self, records: Sequence[bytes]) -> None:
        if self.failing:
            raise ConnectionError("buffer away")
        await super().append(records)


def _dropped(reason: str) -> float:
    return REGISTRY.get_sample_value("gridgate_log_records_dropped_total", {"reason": reason}) or 0


async def _until(condition: object, deadline_s: float = 20.0) -> None:
    deadline = time.monotonic() + deadline_s
    while not await condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def _traffic(runtime: Runtime) -> int:
    async with runtime.db.sessions() as session:
        return int(await session.scalar(select(func.sum(TrafficHour.requests))) or 0)


async def test_a_full_queue_drops_and_counts(tmp_path: Path) -> None:
    service = LogService(SpoolBuffer(tmp_path), max_queue=3)
    before = _dropped("queue_full")
    taken = [service.offer(record()) for _ in range(5)]
    assert taken == [True, True, True, False, False]
    assert service.status().queued == 3 and service.status().dropped == 2
    assert _dropped("queue_full") == before + 2


async def test_records_wait_in_order_while_the_buffer_is_away(tmp_path: Path) -> None:
    buffer = FlakyBuffer(tmp_path)
    service = LogService(buffer, batch=2, max_queue=4)
    records = [record() for _ in range(4)]
    for item in records:
        service.offer(item)
    buffer.failing = True
    with pytest.raises(ConnectionError):
        await service.flush()
    assert service.status().queued == 4 and service.status().dropped == 0
    buffer.failing = False
    assert await service.flush() == 4
    entries = await buffer.read("c", 10)
    assert [orjson.loads(e.data)["trace_id"] for e in entries] == [r.trace_id for r in records]


async def test_the_job_flushes_a_full_batch_at_once_and_the_rest_on_stop(tmp_path: Path) -> None:
    buffer = SpoolBuffer(tmp_path)
    service = LogService(buffer, batch=10, linger_s=3600)
    stopping = asyncio.Event()
    job = asyncio.create_task(service.run(stopping))
    for _ in range(10):
        service.offer(record())

    async def appended() -> bool:
        return service.status().appended == 10

    await _until(appended)
    service.offer(record())
    stopping.set()
    await asyncio.wait_for(job, timeout=20)
    assert service.status().appended == 11
    assert (await buffer.stats()).waiting == 11


async def test_log_parts_move_records_into_the_analytics(runtime: Runtime) -> None:
    await runtime.db.migrate()
    parts = LogParts.build(runtime, analysis_interval_s=0.05)
    assert isinstance(parts.buffer, SpoolBuffer)
    assert parts.store.local_root == (runtime.settings.data_dir / "logs").resolve()
    stopping = asyncio.Event()
    jobs = [asyncio.create_task(job(stopping)) for job in parts.jobs()]
    for _ in range(5):
        assert parts.service.offer(record())

    async def analysed() -> bool:
        return await _traffic(runtime) == 5

    try:
        await _until(analysed)
    finally:
        stopping.set()
        await asyncio.wait_for(asyncio.gather(*jobs), timeout=20)
    assert list(runtime.settings.data_dir.glob("log-spool/*.seg"))


def test_storage_url_comes_from_the_settings(tmp_path: Path) -> None:
    from gridgate.logs.service import default_storage_url  # noqa: PLC0415
    from gridgate.runtime import Runtime  # noqa: PLC0415
    from tests.conftest import make_settings  # noqa: PLC0415

    shared = make_settings(tmp_path, log_storage_url="s3://bucket/gridgate-logs")
    assert default_storage_url(Runtime.build(shared)) == "s3://bucket/gridgate-logs"
    local = make_settings(tmp_path)
    assert default_storage_url(Runtime.build(local)) == str((tmp_path / "logs").resolve())


async def test_with_redis_gateways_only_append_and_the_logs_role_batches_and_analyses(
    tmp_path: Path, sqlite_template: Path, redis_server: RedisServer
) -> None:
    shutil.copy(sqlite_template, tmp_path / "gridgate.db")
    settings = make_settings(
        tmp_path,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'gridgate.db'}",
        redis_url=redis_server.url.replace("/0", "/6"),
    )
    runtime = Runtime.build(settings)
    # Two processes' worth of parts on one Redis: a gateway node's and the logs role's.
    gateway = LogParts.build(runtime, analysis_interval_s=0.05)
    logs = LogParts.build(runtime, analysis_interval_s=0.05)
    assert isinstance(gateway.buffer, RedisStreamBuffer) and gateway.shared
    stopping = asyncio.Event()
    jobs = [asyncio.create_task(job(stopping)) for job in gateway.jobs(pipeline=False)]
    try:
        for _ in range(5):
            assert gateway.service.offer(record())

        async def appended() -> bool:
            return gateway.service.status().appended == 5

        await _until(appended)
        await asyncio.sleep(0.3)  # several analysis intervals: nothing batches on the gateway
        assert (await gateway.buffer.stats()).waiting == 5
        files = await asyncio.to_thread(lambda: list(tmp_path.rglob("*.parquet")))
        assert not files and await _traffic(runtime) == 0

        jobs += [asyncio.create_task(job(stopping)) for job in logs.jobs(append=False)]

        async def analysed() -> bool:
            return await _traffic(runtime) == 5

        await _until(analysed)
        assert (await logs.buffer.stats()).waiting == 0
    finally:
        stopping.set()
        await asyncio.wait_for(asyncio.gather(*jobs), timeout=20)
        await runtime.close()


@pytest.mark.parametrize(
    ("redis", "override", "pipeline"),
    [(False, None, True), (True, None, False), (True, True, True)],
)
async def test_a_gateway_batches_its_log_only_where_the_buffer_is_its_own(
    tmp_path: Path,
    redis_server: RedisServer,
    redis: bool,
    override: bool | None,
    pipeline: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = redis_server.url.replace("/0", "/6") if redis else None
    runtime = Runtime.build(make_settings(tmp_path, redis_url=url))
    parts = GatewayParts.build(runtime)
    asked: list[dict[str, bool]] = []
    monkeypatch.setattr(parts.logs, "jobs", lambda **kw: asked.append(kw) or [])
    parts.jobs(["http://127.0.0.1:1"], log_pipeline=override)
    # The engine appends the gateway's records itself (spool or stream): never this process.
    assert asked == [{"append": False, "pipeline": pipeline}]
    await parts.logs.buffer.close()
    await runtime.close()
