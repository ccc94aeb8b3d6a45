"""Memory per idle keep-alive connection of a server process (``gridgate bench engine``).

The server's resident set (``VmRSS`` of ``/proc/PID/status``) is read before and while
:func:`gridgate.bench.clients.hold_idle` holds ``count`` connections open, each after one
full call; the difference over ``count`` is what an idle connection costs it. The
connections come from several loopback addresses (``127.0.0.2`` …) so that a server's cap per
client address (the engine's 256) is not what stops them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from gridgate.bench.clients import hold_idle

__all__ = ["IdleMemory", "loopback_sources", "measure_idle", "rss_bytes"]

#: Connections per loopback source address: under the engine's default cap per address.
PER_SOURCE = 200


def rss_bytes(pid: int) -> int:
    """The resident set of process ``pid`` (``VmRSS``), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            value, unit = line.split()[1:3]
            if unit != "kB":
                raise RuntimeError(f"unexpected VmRSS unit in /proc/{pid}/status: {line!r}")
            return int(value) * 1024
    raise RuntimeError(f"no VmRSS in /proc/{pid}/status (a kernel thread?)")


def loopback_sources(count: int, per_source: int = PER_SOURCE) -> list[str]:
    """Enough loopback addresses from ``127.0.0.2`` on for ``count`` connections."""
    needed = -(-count // per_source)
    if needed > 250:
        raise ValueError(f"{count} connections need more than 250 loopback addresses")
    return [f"127.0.0.{2 + index}" for index in range(needed)]


@dataclass(frozen=True, slots=True)
class IdleMemory:
    """A server's resident set around ``opened`` idle keep-alive connections."""

    opened: int
    held: int
    rss_before: int
    rss_after: int
    statuses: Counter[int]

    @property
    def per_connection(self) -> float:
        """Bytes of resident memory per idle connection held."""
        return (self.rss_after - self.rss_before) / self.held if self.held else 0.0

    @property
    def answered(self) -> int:
        """Connections whose one call was answered 200."""
        return self.statuses[200]

    def detail(self) -> str:
        """The raw figures, for a report row."""
        refused = {status: n for status, n in self.statuses.items() if status != 200}
        said = f", **answers other than 200: {refused}**" if refused else ""
        return (
            f"{self.held:,} of {self.opened:,} held open; RSS {self.rss_before / 2**20:,.1f} → "
            f"{self.rss_after / 2**20:,.1f} MiB{said}"
        )


def measure_idle(pid: int, host: str, port: int, requests: Sequence[bytes]) -> IdleMemory:
    """Hold one idle connection per request to ``host:port`` and read ``pid``'s memory."""
    before = rss_bytes(pid)
    held, statuses, after = hold_idle(
        host, port, requests, lambda: rss_bytes(pid), sources=loopback_sources(len(requests))
    )
    return IdleMemory(len(requests), held, before, after, statuses)
