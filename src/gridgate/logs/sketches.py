"""Summaries of an hour's requests that merge: latency histograms and distinct-account counters.

The analysis adds each Parquet file to its hour once (docs/decisions.md, "The log analysis
adds each file once"). Counts add up, but a percentile or a number of distinct accounts does
not: each traffic row keeps these summaries beside its figures, each new file's summaries
are merged into them, and the figures are read off the merged summary.

- :class:`Histogram`: counts per logarithmic bucket (DDSketch's layout). Any percentile read
  from it is within :data:`RELATIVE_ACCURACY` (1 %) of the exact one; values below
  :data:`ZERO_BELOW_MS` count as 0, and the exact minimum and maximum are kept, so a
  percentile never leaves the range of the values seen.
- :class:`Distinct`: a HyperLogLog of 2^12 one-byte registers: a standard error of about
  1.6 %, and close to exact for a few hundred values or fewer (linear counting).

DuckDB computes each file's buckets and registers (:func:`bucket_sql`, :func:`register_sql`);
Python only merges them, in proportion to the buckets and registers, not to the records.
"""

from __future__ import annotations

import math
import struct
import zlib
from array import array
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.compute as pc  # type: ignore[import-untyped]

__all__ = [
    "RELATIVE_ACCURACY",
    "ZERO_BELOW_MS",
    "Distinct",
    "Histogram",
    "bucket_sql",
    "register_sql",
]

#: How far (relative) a percentile read from a :class:`Histogram` may be from the exact one.
RELATIVE_ACCURACY = 0.01
_GAMMA = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
_LN_GAMMA = math.log(_GAMMA)
#: Values below this many milliseconds (a microsecond) are counted as 0.
ZERO_BELOW_MS = 0.001
#: The bucket of the values counted as 0 (below any real bucket: 1 µs is bucket -345).
_ZERO = -32768
_HISTOGRAM_HEADER = struct.Struct("<Bdd")
_FORMAT = 1

_PRECISION = 12
_REGISTERS = 1 << _PRECISION
_RANK_BITS = 32
#: 2^-rank for every rank a register can hold (the estimate sums them).
_INVERSE_POWERS = [2.0**-rank for rank in range(_RANK_BITS + 2)]
_HLL_ALPHA = 0.7213 / (1 + 1.079 / _REGISTERS)


def _as_arrow(registers: bytearray) -> Any:
    return pa.Array.from_buffers(pa.uint8(), len(registers), [None, pa.py_buffer(registers)])


def bucket_sql(column: str) -> str:
    """DuckDB's expression for the :class:`Histogram` bucket of ``column`` (in ms)."""
    # Bucket i holds (γ^(i-1), γ^i]; its midpoint 2γ^i/(γ+1) is within the accuracy of both ends.
    return (
        f"CASE WHEN {column} < {ZERO_BELOW_MS!r} THEN {_ZERO} "
        f"ELSE ceil(ln({column}) / {_LN_GAMMA!r})::INTEGER END"
    )


def register_sql(column: str) -> tuple[str, str]:
    """DuckDB's expressions for the :class:`Distinct` register of ``column`` and its rank.

    The hash is the first 64 bits of the value's MD5: stable across DuckDB versions, so that
    registers stored by one version merge with those of the next.
    """
    hashed = f"('0x' || substr(md5({column}), 1, 16))::UBIGINT"
    rest = f"(({hashed} >> {64 - _PRECISION - _RANK_BITS}) & {(1 << _RANK_BITS) - 1})"
    # The rank is the position of the first 1 bit in the 32 bits after the register's.
    rank = (
        f"CASE WHEN {rest} = 0 THEN {_RANK_BITS + 1} "
        f"ELSE {_RANK_BITS} - floor(log2({rest}))::INTEGER END"
    )
    return f"({hashed} >> {64 - _PRECISION})::INTEGER", rank


@dataclass(slots=True)
class Histogram:
    """Counts of values (ms) per logarithmic bucket, with the exact minimum and maximum."""

    counts: dict[int, int] = field(default_factory=dict)
    low: float = math.inf
    high: float = -math.inf

    @property
    def total(self) -> int:
        """How many values were counted."""
        return sum(self.counts.values())

    def add(self, bucket: int, count: int) -> None:
        """Count ``count`` more values in ``bucket`` (as :func:`bucket_sql` gives it)."""
        self.counts[bucket] = self.counts.get(bucket, 0) + count

    def extend(self, low: float | None, high: float | None) -> None:
        """Widen the range of the values seen."""
        if low is not None:
            self.low = min(self.low, low)
        if high is not None:
            self.high = max(self.high, high)

    def merge(self, other: Histogram) -> None:
        """Add ``other``'s values to these."""
        for bucket, count in other.counts.items():
            self.add(bucket, count)
        self.extend(other.low, other.high)

    def _value(self, bucket: int) -> float:
        value = 0.0 if bucket == _ZERO else 2 * _GAMMA**bucket / (_GAMMA + 1)
        return min(max(value, self.low), self.high)

    def quantile(self, q: float) -> float:
        """The ``q`` quantile, interpolated between the closest ranks (as DuckDB's
        ``quantile_cont``); 0 when nothing was counted."""
        total = self.total
        if not total:
            return 0.0
        position = q * (total - 1)
        below = math.floor(position)
        above = min(below + 1, total - 1)
        # The first and last ranks are the exact minimum and maximum.
        values: dict[int, float] = {0: self.low, total - 1: self.high}
        seen = 0
        for bucket in sorted(self.counts):
            seen += self.counts[bucket]
            for rank in (below, above):
                if rank not in values and rank < seen:
                    values[rank] = self._value(bucket)
            if below in values and above in values:
                break
        return values[below] + (values[above] - values[below]) * (position - below)

    def to_bytes(self) -> bytes:
        """The stored form: compressed buckets, counts and range."""
        buckets = sorted(self.counts)
        header = _HISTOGRAM_HEADER.pack(_FORMAT, self.low, self.high)
        counts = [self.counts[bucket] for bucket in buckets]
        body = array("h", buckets).tobytes() + array("Q", counts).tobytes()
        return zlib.compress(header + body)

    @classmethod
    def from_bytes(cls, data: bytes) -> Histogram:
        """A histogram from :meth:`to_bytes`."""
        raw = zlib.decompress(data)
        version, low, high = _HISTOGRAM_HEADER.unpack_from(raw)
        if version != _FORMAT:
            raise ValueError(f"unknown histogram format {version}")
        body = raw[_HISTOGRAM_HEADER.size :]
        size = len(body) // (2 + 8)
        buckets, counts = array("h"), array("Q")
        buckets.frombytes(body[: 2 * size])
        counts.frombytes(body[2 * size :])
        return cls(dict(zip(buckets, counts, strict=True)), low, high)


@dataclass(slots=True)
class Distinct:
    """A HyperLogLog counter of distinct values (2^12 registers)."""

    registers: bytearray = field(default_factory=lambda: bytearray(_REGISTERS))

    def add(self, register: int, rank: int) -> None:
        """Record a value's ``rank`` in ``register`` (as :func:`register_sql` gives them)."""
        self.registers[register] = max(self.registers[register], rank)

    def merge(self, other: Distinct) -> None:
        """Count ``other``'s values too."""
        # Element-wise in Arrow: a Python loop over 4,096 registers cost 2 ms a row.
        mine, theirs = _as_arrow(self.registers), _as_arrow(other.registers)
        merged = pc.max_element_wise(mine, theirs).buffers()[1]
        self.registers = bytearray(merged.to_pybytes()[:_REGISTERS])

    def estimate(self) -> int:
        """About how many distinct values were counted."""
        registers = bytes(self.registers)
        # Registers per rank, each count one pass in C, instead of a Python step per register.
        per_rank = [registers.count(rank) for rank in range(len(_INVERSE_POWERS))]
        harmonic = sum(n * power for n, power in zip(per_rank, _INVERSE_POWERS, strict=True))
        estimate = _HLL_ALPHA * _REGISTERS**2 / harmonic
        empty = per_rank[0]
        if estimate <= 2.5 * _REGISTERS and empty:
            # Few values: the share of empty registers says more (linear counting).
            estimate = _REGISTERS * math.log(_REGISTERS / empty)
        return round(estimate)

    def to_bytes(self) -> bytes:
        """The stored form: the registers, compressed."""
        return zlib.compress(bytes(self.registers))

    @classmethod
    def from_bytes(cls, data: bytes) -> Distinct:
        """A counter from :meth:`to_bytes`."""
        registers = bytearray(zlib.decompress(data))
        if len(registers) != _REGISTERS:
            raise ValueError(f"a distinct counter has {_REGISTERS} registers")
        return cls(registers)
