"""The engine under ``gridgate bench engine``: the Rust data plane with one worker, one route.

``python -m gridgate.bench.engine_host '<json>'`` starts ``gridgate._engine`` on
``127.0.0.1:port`` in front of the bench backend and serves until SIGTERM. The JSON carries
``port``, ``backend_port``, ``secret`` (the bench channel's), ``jwks`` (verifying the bench's
customer tokens), ``token_max_lifetime_s`` (at least the bench token's) and ``spool`` (the
access-log directory); optionally ``workers`` (1) and ``redis_url`` (Redis mode: nonces, rate
windows and access records in Redis). The snapshot is built here rather than loaded from a
catalog: one channel, one level-1 interface with a path customer scope and a rate limit
counted on every call, one mask rule — the whole pipeline, without a database. Every other
setting is the engine's default (16,384 connections, 256 per client address).
"""

from __future__ import annotations

import json
import secrets
import signal
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gridgate.gateway.engine import DataPlane, EngineConfig
from gridgate.gateway.snapshot import ChannelView, FieldRuleView, InterfaceView, compile_snapshot
from gridgate.internal_auth import InternalKeys
from gridgate.permissions.fields import FieldRule
from gridgate.registry.client import InstanceInfo
from gridgate.web.connections import raise_descriptor_limit

__all__ = ["CHANNEL", "INTERFACE", "PATH_PREFIX", "SERVICE", "main", "start_engine"]

CHANNEL = "bench"
INTERFACE = "bench.customer"
SERVICE = "bench-backend"
PATH_PREFIX = "/api/v1/bench/"


def start_engine(args: Mapping[str, Any]) -> DataPlane:
    """The engine listening on ``args["port"]`` with the bench snapshot pushed (see above)."""
    channel = ChannelView(CHANNEL, args["secret"], True, (), None)
    interface = InterfaceView(
        code=INTERFACE,
        method="GET",
        path=PATH_PREFIX + "{customer_no}",
        enabled=True,
        requires_client_auth=True,
        min_level=1,  # so the token is checked
        idempotent=True,
        timeout_s=5.0,
        target_service=SERVICE,
        balancer="round_robin",
        rate_limit_per_s=1_000_000,  # counted on every call, never refused
        max_concurrency=None,
        max_queue=0,
        max_wait_s=0.0,
        channels=frozenset({CHANNEL}),
        customer_scope="path:customer_no",  # the token's customers must hold the path's
    )
    rule = FieldRuleView(INTERFACE, None, FieldRule("name", "mask:name", 2))
    snapshot = compile_snapshot(1, [channel], [interface], [], [rule])
    config = EngineConfig(
        port=args["port"],
        workers=args.get("workers", 1),
        token_max_lifetime_s=float(args["token_max_lifetime_s"]),
        access_log_dir=Path(args["spool"]),
        redis_url=args.get("redis_url"),
    )
    # The backend (nginx) does not check X-GG-Internal: any key will do.
    plane = DataPlane(config, InternalKeys(secrets.token_bytes(32)))
    backend = InstanceInfo(
        "bench-1", SERVICE, "127.0.0.1", args["backend_port"], 100, None, {}, True
    )
    plane.push(snapshot, instances={SERVICE: [backend]}, jwks=args["jwks"])
    plane.start()
    return plane


def main() -> None:
    """Serve until SIGTERM (or SIGINT), then stop the engine with a short grace."""
    raise_descriptor_limit()  # the idle-connection run holds 10,000 connections
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    plane = start_engine(json.loads(sys.argv[1]))  # the bench probes it with a signed call
    stop.wait()
    plane.stop(1.0)


if __name__ == "__main__":
    main()
