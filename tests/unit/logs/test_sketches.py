"""The summaries the analysis merges: percentiles within 1 %, distinct counts near exact, and
merging the parts of a data set gives exactly the summary of the whole."""

from __future__ import annotations

import math
import random

import duckdb
import pytest

from gridgate.logs.sketches import (
    RELATIVE_ACCURACY,
    ZERO_BELOW_MS,
    Distinct,
    Histogram,
    bucket_sql,
    register_sql,
)


def _exact(values: list[float], q: float) -> float:
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _histogram(values: list[float]) -> Histogram:
    con = duckdb.connect()
    con.execute("CREATE TABLE t AS SELECT unnest($1::DOUBLE[]) AS x", [values])
    made = Histogram()
    query = f"SELECT {bucket_sql('x')}, count(*) FROM t GROUP BY 1"  # noqa: S608 - ours
    for bucket, count in con.execute(query).fetchall():
        made.add(bucket, count)
    made.extend(*(con.execute("SELECT min(x), max(x) FROM t").fetchone() or (None, None)))
    return made


def _distinct(values: list[str]) -> Distinct:
    con = duckdb.connect()
    con.execute("CREATE TABLE t AS SELECT unnest($1::VARCHAR[]) AS a", [values])
    register, rank = register_sql("a")
    made = Distinct()
    query = f"SELECT {register}, max({rank}) FROM t GROUP BY 1"  # noqa: S608 - ours
    for index, top in con.execute(query).fetchall():
        made.add(index, top)
    return made


def _values(seed: int, n: int) -> list[float]:
    rng = random.Random(seed)  # noqa: S311 - a reproducible data set, not a secret
    # Latencies over five orders of magnitude, and some below a microsecond (counted as 0).
    return [rng.lognormvariate(3, 2) for _ in range(n)] + [0.0, 0.0004] * (n // 50)


@pytest.mark.parametrize("q", [0.0, 0.01, 0.5, 0.95, 0.99, 1.0])
def test_percentiles_are_within_the_stated_accuracy(q: float) -> None:
    values = _values(1, 20_000)
    found = _histogram(values).quantile(q)
    assert found == pytest.approx(_exact(values, q), rel=RELATIVE_ACCURACY, abs=ZERO_BELOW_MS)


def test_few_values_give_their_exact_percentiles() -> None:
    assert _histogram([12.5, 12.5, 12.5]).quantile(0.99) == 12.5  # within the min and max
    two = _histogram([10.0, 20.0])
    assert (two.quantile(0.0), two.quantile(1.0)) == (10.0, 20.0)
    assert Histogram().quantile(0.5) == 0.0


def test_merged_parts_are_the_whole() -> None:
    values = _values(2, 6000)
    merged = _histogram(values[:1000])
    merged.merge(_histogram(values[1000:4000]))
    merged.merge(_histogram(values[4000:]))
    assert merged == _histogram(values)
    assert Histogram.from_bytes(merged.to_bytes()) == merged


def test_distinct_counts() -> None:
    accounts = [f"acc-{i}" for i in range(20_000)]
    for n in (1, 2, 3, 10, 50):
        assert _distinct(accounts[:n] * 3).estimate() == n  # few: exact
    # Many: within three standard errors (1.6 % each) of the truth.
    assert _distinct(accounts).estimate() == pytest.approx(20_000, rel=0.05)
    assert Distinct().estimate() == 0


def test_merged_counters_are_the_union() -> None:
    accounts = [f"acc-{i}" for i in range(3000)]
    merged = _distinct(accounts[:2000])
    merged.merge(_distinct(accounts[1000:]))  # shared values count once
    assert merged == _distinct(accounts)
    assert Distinct.from_bytes(merged.to_bytes()) == merged


def test_damaged_summaries_are_refused() -> None:
    with pytest.raises(ValueError, match="registers"):
        Distinct.from_bytes(Histogram().to_bytes())
