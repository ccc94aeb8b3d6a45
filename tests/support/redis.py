"""A throwaway Redis server for the test session, started from the installed binary."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support.postgres import free_port

_START_ATTEMPTS = 3


def _binary() -> str:
    found = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(found).exists():
        raise RuntimeError("redis-server not found: install the redis-server package")
    return found


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class RedisServer:
    """A running server without persistence; ``url`` points at database 0."""

    port: int
    root: Path
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @classmethod
    def start(cls, deadline_s: float = 15.0) -> RedisServer:
        """Start a server on a free port and return once it answers PING."""
        binary = _binary()
        for _ in range(_START_ATTEMPTS):
            root = Path(tempfile.mkdtemp(prefix="gridgate-redis-"))
            port = free_port()
            # No persistence: the data lives as long as the test session.
            options = {
                "port": str(port),
                "bind": "127.0.0.1",
                "save": "",
                "appendonly": "no",
                "daemonize": "no",
                "dir": str(root),
            }
            argv = [
                binary,
                *(part for name, value in options.items() for part in (f"--{name}", value)),
            ]
            with (root / "server.log").open("wb") as log:
                process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
            server = cls(port, root, process)
            deadline = time.monotonic() + deadline_s
            # Poll until PING answers, the process dies (port taken since we looked) or time is up.
            while process.poll() is None and time.monotonic() < deadline:
                if _answers_ping(port):
                    return server
                time.sleep(0.02)
            died = process.poll() is not None
            output = (root / "server.log").read_text(errors="replace")
            server.stop()
            if not died or "Address already in use" not in output:
                raise RuntimeError(f"redis-server did not start:\n{output}")
        raise RuntimeError("redis-server found no free port")

    def stop(self) -> None:
        """Stop the server and delete its directory."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.root, ignore_errors=True)
