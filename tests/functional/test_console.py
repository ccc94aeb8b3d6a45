"""`gridgate up` in a terminal: the banner, then only what needs attention."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

START_DEADLINE_S = 60
#: Routine lines of other libraries that used to bury the banner (about 150 a minute).
ROUTINE = ("HTTP Request:", "Started server process", "Running upgrade", "Waiting for")


def _up(tmp_path: Path, *extra: str) -> tuple[str, list[str]]:
    """Run `gridgate up` until the demo systems registered, stop it; (stdout, stderr lines)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDGATE_")}
    out_path, err_path = tmp_path / "stdout", tmp_path / "stderr"
    with out_path.open("w") as out, err_path.open("w") as err:
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "gridgate", "up", "--data-dir", str(tmp_path / "data")),
                *("--gateway-port", "0", "--admin-port", "0", "--registry-port", "0", *extra),
            ],
            env=env,
            stdout=out,
            stderr=err,
            text=True,
        )
        try:
            deadline = time.monotonic() + START_DEADLINE_S
            # Registering the twelve demo instances took a dozen HTTP requests, and their
            # first heartbeats follow: what used to fill the console.
            while "demo_systems_registered" not in err_path.read_text():
                assert proc.poll() is None, err_path.read_text()
                assert time.monotonic() < deadline, "gridgate up did not come up in time"
                time.sleep(0.1)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=15)
    return out_path.read_text(), err_path.read_text().splitlines()


def test_up_shows_the_banner_then_only_what_needs_attention(tmp_path: Path) -> None:
    stdout, lines = _up(tmp_path)
    assert not [line for line in lines if any(routine in line for routine in ROUTINE)]
    assert "is up:" in stdout and "credentials in" in stdout
    assert "traffic line a minute" in stdout  # the banner says what will follow
    # It counts what the README's listener table counts: the accounts listener is not a demo.
    demo = "demo 10 instances of billing, consultation, marketing, notices, payment"
    assert demo in " ".join(stdout.split())
    assert not [line for line in lines if line.startswith("{")]  # for people, not collectors
    assert len(lines) < 12, lines  # start-up events and warnings only


def test_up_writes_json_logs_when_asked_and_everything_at_debug(tmp_path: Path) -> None:
    _, lines = _up(tmp_path, "--log-format", "json", "--log-level", "debug")
    events = [json.loads(line) for line in lines]
    assert {"event", "level", "logger", "timestamp"} <= set(events[0])
    assert any(e["logger"] == "httpx" for e in events)  # debug shows other libraries too
