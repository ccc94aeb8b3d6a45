"""The permission decision as the snapshot compiles it (``required_level``, the rule the engine
applies on every request): floors from components and functions."""

from __future__ import annotations

from gridgate.gateway.snapshot import (
    ChannelView,
    InterfaceView,
    PermissionView,
    Snapshot,
    compile_snapshot,
    required_level,
)
from gridgate.permissions.levels import Floor

SECRET = "stage-test-secret-000000000001"


def _interface() -> InterfaceView:
    return InterfaceView(
        code="notices.outages",
        method="GET",
        path="/api/v1/notices/outages",
        enabled=True,
        requires_client_auth=True,
        min_level=0,
        idempotent=True,
        timeout_s=1.0,
        target_service="notices",
        balancer="round_robin",
        rate_limit_per_s=None,
        max_concurrency=None,
        max_queue=0,
        max_wait_s=0.0,
        channels=frozenset({"app"}),
    )


def _decision(snapshot: Snapshot, channel: str, level: int) -> str:
    """What the gateway answers a caller of ``level`` on ``channel``."""
    required = required_level(snapshot, channel, snapshot.interfaces["notices.outages"])
    if required is None:
        return "perm.denied"
    return "ok" if level >= required else f"level {required}"


def _channels() -> list[ChannelView]:
    return [ChannelView(code, SECRET, True, (), None) for code in ("app", "web", "wx")]


def test_a_floor_raises_the_level_on_its_channel_only() -> None:
    interface = _interface()
    snapshot = compile_snapshot(
        1, _channels(), [interface], floors=[Floor("app", interface.code, 2)]
    )

    assert [_decision(snapshot, "app", level) for level in (0, 2)] == ["level 2", "ok"]
    # A floor is not a permission: the interface stays open to the other channels.
    assert _decision(snapshot, "web", 0) == "ok"
    assert interface.code not in snapshot.permissioned


def test_a_refusing_floor_refuses_on_its_channel_only() -> None:
    interface = _interface()
    snapshot = compile_snapshot(
        1,
        _channels(),
        [interface],
        [PermissionView("app", interface.code, 0), PermissionView("web", interface.code, 1)],
        floors=[Floor("app", interface.code, None), Floor("web", interface.code, 0)],
    )

    assert _decision(snapshot, "app", 2) == "perm.denied"
    # A floor never lowers what the permission asks, nor opens it to a channel without one.
    assert _decision(snapshot, "web", 0) == "level 1"
    assert _decision(snapshot, "wx", 2) == "perm.denied"
