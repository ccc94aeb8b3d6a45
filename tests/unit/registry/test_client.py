"""The registry SDK against an in-process registry: registration, discovery, outages."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from gridgate.registry.client import Discovery, RegistryClient, RegistryUnavailable
from gridgate.registry.interfaces import Timings
from gridgate.registry.testing import BASE_URL, InProcessRegistry, in_process_registry

SYSTEMS = {"billing": "pw-billing-0001", "marketing": "pw-marketing-01"}
BILLING = ("billing", SYSTEMS["billing"])
# Short timings so the SDK's own background loops turn over quickly; no test asserts durations.
FAST = Timings(heartbeat_interval_s=0.05, unhealthy_after_s=5, remove_after_s=10)
DEADLINE_S = 10.0


async def _until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(DEADLINE_S):
        while not condition():
            await asyncio.sleep(0.01)


class Switchable(httpx.AsyncBaseTransport):
    """A transport that can be cut, as if every registry node were down."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.down = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("registry down", request=request)
        return await self.inner.handle_async_request(request)


@pytest.fixture
async def registry() -> InProcessRegistry:
    async with in_process_registry(SYSTEMS, token="read-token", timings=FAST) as found:
        yield found  # type: ignore[misc]


async def test_registration_lifecycle(registry: InProcessRegistry) -> None:
    client = registry.client(credentials=BILLING)
    async with client.registration("billing", host="10.0.0.7", port=9104, weight=50) as handle:
        assert handle.instance_id
        _, found = await registry.store.instances("billing")
        assert [(i.host, i.port, i.weight, i.owner) for i in found] == [
            ("10.0.0.7", 9104, 50, "billing")
        ]
        first = found[0].last_heartbeat
        async with asyncio.timeout(DEADLINE_S):
            while (await registry.store.instances("billing"))[1][0].last_heartbeat <= first:
                await asyncio.sleep(0.01)
    _, after = await registry.store.instances("billing", healthy_only=False)
    assert after == []  # deregistered on the way out
    await client.aclose()


async def test_reregisters_after_404(registry: InProcessRegistry) -> None:
    client = registry.client(credentials=BILLING)
    async with client.registration("billing", host="10.0.0.7", port=9104) as handle:
        first_id = handle.instance_id
        assert first_id is not None
        await registry.store.deregister(first_id)  # e.g. expired during a long pause
        await _until(lambda: handle.instance_id != first_id)
        _, found = await registry.store.instances("billing")
        assert [i.instance_id for i in found] == [handle.instance_id]
    await client.aclose()


async def test_wrong_credentials_are_refused(registry: InProcessRegistry) -> None:
    client = registry.client(credentials=("billing", "wrong-password"))
    with pytest.raises(httpx.HTTPStatusError) as caught:
        await client.register("billing", "10.0.0.7", 9104)
    assert caught.value.response.status_code == 401
    assert caught.value.response.json()["code"] == "auth.bad_credentials"
    await client.aclose()


async def test_discovery_follows_changes_by_watch(
    registry: InProcessRegistry, tmp_path: Path
) -> None:
    writer = registry.client(credentials=BILLING)
    reader = registry.client(token="read-token")
    await writer.register("billing", "10.0.0.1", 9104)
    discovery = Discovery(
        reader, services=["billing"], snapshot_path=tmp_path / "snap.json", watch_timeout_s=1
    )
    await discovery.start()
    try:
        assert [i.host for i in discovery.instances("billing")] == ["10.0.0.1"]
        second, _ = await writer.register("billing", "10.0.0.2", 9104)
        await _until(lambda: len(discovery.instances("billing")) == 2)
        await writer.deregister(second)
        await _until(lambda: len(discovery.instances("billing")) == 1)
        saved = json.loads((tmp_path / "snap.json").read_text())
        assert [i["host"] for i in saved["services"]["billing"]] == ["10.0.0.1"]
    finally:
        await discovery.stop()
        await writer.aclose()
        await reader.aclose()


async def test_all_nodes_down_keeps_last_known_and_restarts_from_snapshot(
    registry: InProcessRegistry, tmp_path: Path
) -> None:
    writer = registry.client(credentials=BILLING)
    await writer.register("billing", "10.0.0.1", 9104)
    snapshot = tmp_path / "snap.json"
    link = Switchable(httpx.ASGITransport(app=registry.app))
    reader = RegistryClient([BASE_URL], token="read-token", transport=link)
    discovery = Discovery(
        reader, services=["billing"], snapshot_path=snapshot, watch_timeout_s=0.2, retry_s=0.05
    )
    await discovery.start()
    link.down = True
    await asyncio.sleep(0.3)  # let the watch loop hit the outage a few times
    assert [i.host for i in discovery.instances("billing")] == ["10.0.0.1"]
    assert discovery.choose("billing") is not None
    await discovery.stop()
    # A restart while the registry is still down finds the peers in the snapshot file.
    restarted = Discovery(reader, services=["billing"], snapshot_path=snapshot, retry_s=0.05)
    await restarted.start()
    assert [i.host for i in restarted.instances("billing")] == ["10.0.0.1"]
    # Without a snapshot, a start during an outage says so.
    blind = Discovery(reader, services=["billing"], snapshot_path=tmp_path / "none.json")
    with pytest.raises(RegistryUnavailable):
        await blind.start()
    # Back up: the restarted discovery catches up by watching.
    link.down = False
    await writer.register("billing", "10.0.0.2", 9104)
    await _until(lambda: len(restarted.instances("billing")) == 2)
    await restarted.stop()
    await writer.aclose()
    await reader.aclose()


async def test_fails_over_to_the_next_node_and_learns_nodes(registry: InProcessRegistry) -> None:
    await registry.store.register_node("n1", BASE_URL)
    await registry.store.register_node("n2", "http://other-node:8070")
    transport = httpx.ASGITransport(app=registry.app)

    class OnlyOneNode(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            if request.url.host != "registry.test":
                raise httpx.ConnectError("node down", request=request)
            return await transport.handle_async_request(request)

    client = RegistryClient(
        ["http://dead-node:8070", BASE_URL], credentials=BILLING, transport=OnlyOneNode()
    )
    instance_id, interval = await client.register("billing", "10.0.0.9", 9104)
    assert instance_id and interval == FAST.heartbeat_interval_s
    assert client.urls[0] == BASE_URL
    learned = await client.refresh_nodes()
    assert "http://other-node:8070" in learned and learned[0] == BASE_URL
    await client.aclose()


async def test_choose_ejects_failing_instances(registry: InProcessRegistry) -> None:
    writer = registry.client(credentials=BILLING)
    for host in ("10.0.0.1", "10.0.0.2"):
        await writer.register("billing", host, 9104)
    reader = registry.client(token="read-token")
    discovery = Discovery(reader, services=["billing"])
    await discovery.start()
    try:
        bad = next(i for i in discovery.instances("billing") if i.host == "10.0.0.1")
        for _ in range(5):
            discovery.report(bad.instance_id, ok=False)
        picks = {discovery.choose("billing").host for _ in range(20)}  # type: ignore[union-attr]
        assert picks == {"10.0.0.2"}
    finally:
        await discovery.stop()
        await writer.aclose()
        await reader.aclose()
