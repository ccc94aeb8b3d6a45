"""Instructions per request of a whole server process, counted by callgrind over sockets.

The server (the engine host, or nginx as one process) runs under
``valgrind --tool=callgrind --instr-atstart=no --separate-threads=no``: its start-up runs
uninstrumented (fast), a warm-up fills its caches and pools, then instrumentation is switched
on and the requests come from a client outside valgrind (:func:`gridgate.bench.clients.call_all`).
``callgrind_control -e Ir`` reads the process's counters (every thread) after ``n1`` more
requests and again after ``n2`` more; ``(Ir₂ − Ir₁) / (n2 − n1)`` is one request's
instructions, every cost per phase (reading the counters, opening the client's connections)
cancelled out. What an idle server does per second (timers, the access log's writer) is
also counted; it is measured on its own afterwards and reported beside (a few tens of
thousands of instructions per second, against tens of millions while requests run).

This counts exactly what the server process executes: the kernel's work on its sockets is
not an instruction of the process and is not counted, for either.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CallgrindCount", "count_per_request", "parse_totals", "valgrind_argv"]

#: Requests of the two measured phases, after the warm-up.
PHASES = (500, 1500)
_CONTROL_TIMEOUT_S = 30.0
_TOTALS = re.compile(r"^\s*Th\s+\d+\s+([\d,]+)\s*$", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class CallgrindCount:
    """Instructions counted in the two phases and what follows from them."""

    requests: tuple[int, int]
    instructions: tuple[int, int]
    idle_per_s: float

    @property
    def per_request(self) -> float:
        """``(Ir₂ − Ir₁) / (n2 − n1)``: one request's instructions, fixed costs cancelled."""
        (n1, n2), (ir1, ir2) = self.requests, self.instructions
        return (ir2 - ir1) / (n2 - n1)

    def detail(self) -> str:
        """The raw figures, for a report row."""
        (n1, n2), (ir1, ir2) = self.requests, self.instructions
        return (
            f"{ir1:,} Ir for {n1:,} requests, {ir2:,} Ir for {n2:,}; "
            f"idle {self.idle_per_s:,.0f} Ir/s"
        )


def parse_totals(text: str) -> int:
    """The instructions (Ir) counted so far, summed over the threads, from what
    ``callgrind_control -e Ir PID`` printed."""
    if "instrumentation is switched off" in text:
        raise RuntimeError("callgrind's instrumentation is off: nothing was counted")
    found = _TOTALS.findall(text)
    if not found:
        raise RuntimeError(f"no counters in callgrind_control's answer: {text[-500:]!r}")
    return sum(int(value.replace(",", "")) for value in found)


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} not found: `make bench-tools` installs valgrind")
    return found


def valgrind_argv(out: Path) -> list[str]:
    """The prefix that runs a server under callgrind, uncounted until switched on."""
    return [
        _tool("valgrind"),
        "--tool=callgrind",
        "--instr-atstart=no",  # start-up (Python's imports, nginx's config) is not counted
        "--separate-threads=no",
        f"--callgrind-out-file={out}",
    ]


def _control(pid: int, *args: str) -> str:
    done = subprocess.run(  # noqa: S603 - valgrind's own tool, our arguments
        [_tool("callgrind_control"), *args, str(pid)],
        capture_output=True,
        text=True,
        check=False,
        timeout=_CONTROL_TIMEOUT_S,
    )
    if done.returncode != 0:
        raise RuntimeError(f"callgrind_control {' '.join(args)} failed: {done.stderr[-500:]}")
    return done.stdout


def count_per_request(
    pid: int,
    send: Callable[[int], None],
    *,
    warm_up: int = 200,
    phases: Sequence[int] = PHASES,
    idle_s: float = 2.0,
) -> CallgrindCount:
    """Count the server ``pid`` (already under :func:`valgrind_argv`) while ``send(n)`` sends
    it ``n`` full requests and waits for their answers."""
    send(warm_up)
    _control(pid, "--instr=on")
    start = parse_totals(_control(pid, "-e", "Ir"))
    before = start
    counted = []
    for requests in phases:
        send(requests)
        now = parse_totals(_control(pid, "-e", "Ir"))
        counted.append(now - before)
        before = now
    began = time.monotonic()
    time.sleep(idle_s)
    idle = parse_totals(_control(pid, "-e", "Ir")) - before
    idle_per_s = idle / (time.monotonic() - began)
    n1, n2 = phases
    return CallgrindCount((n1, n2), (counted[0], counted[1]), idle_per_s)
