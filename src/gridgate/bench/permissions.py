"""``gridgate bench permissions``: the cost of the gateway's permission decisions and of
compiling a large catalog (both run in-process; no network, no database)."""

from __future__ import annotations

import os
import platform
import random
import time
from dataclasses import dataclass
from pathlib import Path

from gridgate.gateway.snapshot import (
    ChannelView,
    FieldRuleView,
    InterfaceView,
    PermissionView,
    compile_snapshot,
    required_level,
)
from gridgate.permissions.fields import FieldRule

__all__ = ["PermissionsReport", "run_permissions_bench"]


@dataclass(frozen=True, slots=True)
class PermissionsReport:
    """What one run measured."""

    interfaces: int
    compile_s: float
    decisions: int
    decisions_per_s: float
    filters_per_s: float
    machine: dict[str, str]


def _catalog(
    count: int,
) -> tuple[list[ChannelView], list[InterfaceView], list[PermissionView], list[FieldRuleView]]:
    channels = [ChannelView(c, "secret", True, (), None) for c in ("app", "wechat", "web95598")]
    interfaces = [
        InterfaceView(
            code=f"i{n}",
            method="GET",
            path=f"/api/v1/s{n % 100}/r{n}/{{customer_no}}",
            enabled=True,
            requires_client_auth=True,
            min_level=n % 3,
            idempotent=True,
            timeout_s=3.0,
            target_service=f"s{n % 100}",
            balancer="round_robin",
            rate_limit_per_s=None,
            max_concurrency=None,
            max_queue=100,
            max_wait_s=1.0,
            channels=frozenset({"app", "wechat", "web95598"}),
            customer_scope="path:customer_no",
        )
        for n in range(count)
    ]
    # Half the interfaces carry per-channel permissions, each one two field rules.
    permissions = [
        PermissionView(channel, f"i{n}", (n + k) % 3)
        for n in range(0, count, 2)
        for k, channel in enumerate(("app", "wechat"))
    ]
    rules = [
        FieldRuleView(f"i{n}", None, FieldRule(path, action, 2))
        for n in range(count)
        for path, action in (("name", "mask:name"), ("items[].address", "mask:address"))
    ]
    return channels, interfaces, permissions, rules


def run_permissions_bench(
    interfaces: int = 10_000, decisions: int = 1_000_000
) -> PermissionsReport:
    """Compile a catalog of ``interfaces`` and time ``decisions`` permission decisions."""
    channels, views, permissions, rules = _catalog(interfaces)
    started = time.perf_counter()
    snapshot = compile_snapshot(1, channels, views, permissions, rules)
    compile_s = time.perf_counter() - started
    rng = random.Random(7)  # noqa: S311 - benchmark inputs, not security
    picks = [
        (rng.choice(("app", "wechat", "web95598")), views[rng.randrange(interfaces)])
        for _ in range(10_000)
    ]
    started = time.perf_counter()
    for n in range(decisions):
        channel, interface = picks[n % 10_000]
        required_level(snapshot, channel, interface)
    decisions_per_s = decisions / (time.perf_counter() - started)
    name = "张三丰"
    items = [{"address": "浙江省杭州市西湖区文三路1号"}] * 3
    flt = snapshot.field_filter("i1", "app")
    assert flt is not None  # noqa: S101 - every interface has rules in this catalog
    rounds = 100_000
    started = time.perf_counter()
    for _ in range(rounds):
        flt.apply({"name": name, "items": [dict(i) for i in items]}, 1)
    filters_per_s = rounds / (time.perf_counter() - started)
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text(encoding="utf-8").splitlines() if cpuinfo.exists() else []
    machine = {
        "cpu": next(
            (line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")),
            platform.processor(),
        ),
        "cores": str(os.cpu_count()),
        "python": platform.python_version(),
    }
    return PermissionsReport(
        interfaces, compile_s, decisions, decisions_per_s, filters_per_s, machine
    )
