"""Records and a whole pipeline run for the log tests."""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from gridgate.logs.analysis import Analyzer
from gridgate.logs.batcher import Batcher
from gridgate.logs.buffer import LogBuffer, SpoolBuffer
from gridgate.logs.record import AccessRecord
from gridgate.logs.service import LogService
from gridgate.logs.storage import ParquetStore
from gridgate.storage.db import Database

T0 = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
_serial = itertools.count()


def record(time: datetime = T0, **fields: Any) -> AccessRecord:
    """An access record as the gateway writes it; ``fields`` override the defaults."""
    values: dict[str, Any] = {
        "trace_id": f"{next(_serial):032x}",
        "time": time.isoformat(),
        "channel": "app",
        "interface": "bills.read",
        "account": "acc-1",
        "client_ip": "10.0.0.1",
        "method": "GET",
        "status": 200,
        "code": None,
        "latency_ms": 12.5,
        "queue_wait_ms": 0.0,
        "upstream": "u1",
        "bytes_in": 0,
        "bytes_out": 100,
        **fields,
    }
    return AccessRecord(**values)


def minutes(n: int) -> timedelta:
    return timedelta(minutes=n)


async def offer_all(service: LogService, records: Sequence[AccessRecord]) -> None:
    """Hand records to the service and flush them into its buffer."""
    for item in records:
        assert service.offer(item)
    await service.flush()


async def run_pipeline(
    records: Sequence[AccessRecord], data_dir: Path, db: Database, buffer: LogBuffer | None = None
) -> ParquetStore:
    """Service → buffer → batcher → Parquet → analysis, as the background jobs would."""
    buffer = buffer or SpoolBuffer(data_dir / "spool", fsync=False)
    store = ParquetStore(data_dir / "logs")
    await offer_all(LogService(buffer), records)
    await Batcher(buffer, store, batch_size=97).drain()
    await Analyzer(store, db).analyze()
    await buffer.close()
    return store


def mixed_records(seed: int = 7) -> list[AccessRecord]:
    """400 records over three hours: every channel, interface, status and account mixed."""
    rng = random.Random(seed)  # noqa: S311 - a reproducible data set, not a secret
    records = []
    # Distinct seconds, so "newest first" has exactly one right order.
    for second in rng.sample(range(3 * 3600), 400):
        status = rng.choice([200, 200, 200, 201, 401, 403, 404, 429, 502, 503])
        code = {401: "channel.bad_signature", 403: "perm.denied", 429: "flow.rate_limited"}
        records.append(
            record(
                T0 + timedelta(seconds=second),
                channel=rng.choice(["app", "wechat", None]),
                interface=rng.choice(["bills.read", "usage.read", "payments.create", None]),
                account=rng.choice(["acc-1", "acc-2", "acc-3", None]),
                status=status,
                code=code.get(status),  # 404/502/503 from a business system carry no code
                latency_ms=round(rng.uniform(1, 900), 3),
                queue_wait_ms=round(rng.expovariate(0.1), 3),
            )
        )
    return records
