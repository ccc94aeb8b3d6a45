"""Analysis equals a brute-force recomputation in Python, on both database engines.

Counts, error codes and distinct accounts (a few per row, so exact) are equal; percentiles are
within the histograms' stated precision (1 % relative, or 1 µs).
"""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from gridgate.logs.models import ErrorHour, TrafficHour
from gridgate.logs.record import AccessRecord
from gridgate.logs.services import list_trajectory
from gridgate.logs.sketches import RELATIVE_ACCURACY, ZERO_BELOW_MS
from gridgate.logs.storage import hour_of
from gridgate.storage.db import Database
from tests.unit.logs.helpers import mixed_records, run_pipeline


def _quantile(values: list[float], q: float) -> float:
    # Linear interpolation between closest ranks (DuckDB's quantile_cont, numpy's default).
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _close(value: float) -> Any:
    return pytest.approx(value, rel=RELATIVE_ACCURACY, abs=ZERO_BELOW_MS)


def _expected(records: list[AccessRecord]) -> dict[tuple[Any, ...], dict[str, Any]]:
    groups: dict[tuple[Any, ...], list[AccessRecord]] = defaultdict(list)
    for r in records:
        hour = hour_of(datetime.fromisoformat(r.time))
        groups[hour, r.channel or "", r.interface or ""].append(r)
    return {
        key: {
            "requests": len(rows),
            "errors": sum(r.status >= 400 for r in rows),
            "p50_ms": _quantile([r.latency_ms for r in rows], 0.5),
            "p95_ms": _quantile([r.latency_ms for r in rows], 0.95),
            "p99_ms": _quantile([r.latency_ms for r in rows], 0.99),
            "queue_wait_p99_ms": _quantile([r.queue_wait_ms for r in rows], 0.99),
            "accounts": len({r.account for r in rows if r.account}),
        }
        for key, rows in groups.items()
    }


async def test_traffic_equals_brute_force(tmp_path: Path, db: Database) -> None:
    records = mixed_records()
    await run_pipeline(records, tmp_path, db)
    async with db.sessions() as session:
        rows = (await session.scalars(select(TrafficHour))).all()
        errors = (await session.scalars(select(ErrorHour))).all()
    found = {
        (row.hour, row.channel, row.interface): {
            "requests": row.requests,
            "errors": row.errors,
            "p50_ms": _close(row.p50_ms),
            "p95_ms": _close(row.p95_ms),
            "p99_ms": _close(row.p99_ms),
            "queue_wait_p99_ms": _close(row.queue_wait_p99_ms),
            "accounts": row.accounts,
        }
        for row in rows
    }
    assert found == _expected(records)

    by_code: dict[tuple[Any, ...], int] = defaultdict(int)
    for r in records:
        if r.status >= 400:
            hour = hour_of(datetime.fromisoformat(r.time))
            by_code[hour, r.channel or "", r.interface or "", r.code or f"status.{r.status}"] += 1
    assert {(e.hour, e.channel, e.interface, e.code): e.count for e in errors} == by_code


async def test_trajectory_is_every_action_newest_first(tmp_path: Path, db: Database) -> None:
    records = mixed_records()
    await run_pipeline(records, tmp_path, db)
    mine = sorted((r for r in records if r.account == "acc-2"), key=lambda r: r.time, reverse=True)
    async with db.sessions() as session:
        rows, total = await list_trajectory(session, "acc-2", page=1, page_size=200)
    assert total == len(mine)
    assert [(row.time, row.channel, row.interface, row.status, row.code) for row in rows] == [
        (datetime.fromisoformat(r.time), r.channel or "", r.interface or "", r.status, r.code)
        for r in mine
    ]
