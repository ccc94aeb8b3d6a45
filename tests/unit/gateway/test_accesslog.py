"""The access record's clock: the same text as ``datetime.isoformat``, made cheaply."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from gridgate.gateway import accesslog
from gridgate.gateway.accesslog import utc_now_iso


def test_now_reads_back_as_the_current_utc_time() -> None:
    before = datetime.now(UTC)
    text = utc_now_iso()
    after = datetime.now(UTC)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00", text)
    assert before <= datetime.fromisoformat(text) <= after


@pytest.mark.parametrize("now", [1_700_000_000.0, 1_700_000_000.999999, 1_767_225_599.5])
def test_the_format_is_isoformat_across_seconds(
    now: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(accesslog.time, "time", lambda: now)
    expected = datetime.fromtimestamp(now, UTC)
    assert abs(datetime.fromisoformat(utc_now_iso()) - expected).total_seconds() < 1e-5
    assert utc_now_iso()[:19] == expected.isoformat()[:19]
