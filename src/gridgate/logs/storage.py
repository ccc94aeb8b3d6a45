"""Parquet files of access-log records, partitioned ``date=YYYY-MM-DD/hour=HH/`` under a URL.

The URL is a local directory (the default, in the data dir) or anything pyarrow's filesystems
open (``s3://bucket/logs``, ``hdfs://…``). File names carry the buffer ids of the first and last
record of the batch they came from, so writing the same batch twice replaces one file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.fs as pafs  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

__all__ = ["SCHEMA", "BatchFile", "ParquetStore", "id_key"]

#: The columns of every file (the AccessRecord fields plus the buffer id, ``log_id``).
SCHEMA = pa.schema(
    [
        ("log_id", pa.string()),
        ("trace_id", pa.string()),
        ("time", pa.timestamp("us", tz="UTC")),
        ("channel", pa.string()),
        ("interface", pa.string()),
        ("account", pa.string()),
        ("client_ip", pa.string()),
        ("method", pa.string()),
        ("status", pa.int16()),
        ("code", pa.string()),
        ("latency_ms", pa.float64()),
        ("queue_wait_ms", pa.float64()),
        ("upstream", pa.string()),
        ("bytes_in", pa.int64()),
        ("bytes_out", pa.int64()),
    ]
)

_FILE = re.compile(r"date=(\d{4}-\d{2}-\d{2})/hour=(\d{2})/part_([0-9-]+)_([0-9-]+)\.parquet$")


def id_key(entry_id: str) -> tuple[int, int]:
    """A buffer id as a sortable pair (Redis ``ms-seq``, or a spool offset)."""
    first, _, second = entry_id.partition("-")
    return int(first), int(second or 0)


@dataclass(frozen=True, slots=True)
class BatchFile:
    """One Parquet file: its path, its hour and the id range of the batch that wrote it."""

    path: str
    hour: datetime
    first: tuple[int, int]
    last: tuple[int, int]

    @property
    def name(self) -> str:
        """The file's name in its hour's directory."""
        return self.path.rsplit("/", 1)[-1]

    def overlaps(self, other: BatchFile) -> bool:
        """Whether the two batches' id ranges meet (a batch re-delivered in another shape)."""
        return self.first <= other.last and other.first <= self.last


def hour_of(time: datetime) -> datetime:
    """The UTC hour ``time`` falls in."""
    return time.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


class ParquetStore:
    """The columnar log store (列式日志存储) at one URL."""

    def __init__(self, url: str | Path) -> None:
        text = str(url)
        if "://" in text:
            self.filesystem, root = pafs.FileSystem.from_uri(text)
        else:
            self.filesystem, root = pafs.LocalFileSystem(), str(Path(text).resolve())
        self.url = text
        self.root: str = root.rstrip("/")

    @property
    def local_root(self) -> Path | None:
        """The directory on this machine when the store is local (DuckDB reads it directly)."""
        if isinstance(self.filesystem, pafs.LocalFileSystem):
            return Path(self.root)
        return None

    def _dir(self, hour: datetime) -> str:
        return f"{self.root}/date={hour:%Y-%m-%d}/hour={hour:%H}"

    def write(self, hour: datetime, first: str, last: str, table: Any) -> str:
        """Write ``table`` (records of ``hour``) as the file of batch ``first``..``last``."""
        directory = self._dir(hour)
        self.filesystem.create_dir(directory, recursive=True)
        path = f"{directory}/part_{first}_{last}.parquet"
        # Written aside and renamed: a reader (or a crash) never sees half a file.
        tmp = f"{path}.tmp"
        pq.write_table(table, tmp, filesystem=self.filesystem, compression="zstd")
        self.filesystem.move(tmp, path)
        return path

    def _infos(self, since: datetime | None) -> list[Any]:
        # Only the days from ``since`` on are walked: the analysis looks at the last hours
        # every minute, and a store keeps months of files.
        selector = pafs.FileSelector(self.root, recursive=since is None, allow_not_found=True)
        infos = self.filesystem.get_file_info(selector)
        if since is None:
            return list(infos)
        first_day = f"date={since.astimezone(UTC):%Y-%m-%d}"
        found = []
        for info in infos:
            if info.type == pafs.FileType.Directory and info.base_name >= first_day:
                inside = pafs.FileSelector(info.path, recursive=True, allow_not_found=True)
                found += self.filesystem.get_file_info(inside)
        return found

    def files(self, since: datetime | None = None) -> list[BatchFile]:
        """Every complete file, optionally only of hours from ``since`` on."""
        found = []
        for info in self._infos(since):
            match = _FILE.search(info.path)
            if info.type != pafs.FileType.File or match is None:
                continue
            day, hh, first, last = match.groups()
            hour = datetime.fromisoformat(day).replace(hour=int(hh), tzinfo=UTC)
            if since is not None and hour < since:
                continue
            found.append(BatchFile(info.path, hour, id_key(first), id_key(last)))
        found.sort(key=lambda f: (f.hour, f.first))
        return found

    def by_hour(self, since: datetime | None = None) -> dict[datetime, list[BatchFile]]:
        """The files grouped by hour, oldest hour first."""
        grouped: dict[datetime, list[BatchFile]] = {}
        for item in self.files(since):
            grouped.setdefault(item.hour, []).append(item)
        return grouped

    def size(self) -> tuple[int, int]:
        """How many files and bytes the store holds."""
        selector = pafs.FileSelector(self.root, recursive=True, allow_not_found=True)
        infos = [
            i
            for i in self.filesystem.get_file_info(selector)
            if i.type == pafs.FileType.File and i.path.endswith(".parquet")
        ]
        return len(infos), sum(i.size or 0 for i in infos)


HOUR = timedelta(hours=1)
