"""Three `gridgate serve registry` nodes on one Redis: any node answers, losing one is fine,
adding one needs no restart, and clients learn the nodes from the one they know."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from gridgate.catalog.schemas import BusinessSystemCreate
from gridgate.catalog.services import CatalogService
from gridgate.operators.audit import Actor
from gridgate.registry.client import Discovery, RegistryClient
from gridgate.runtime import Runtime
from gridgate.settings import load_settings
from tests.support.redis import RedisServer

PASSWORD = "billing-cluster-pw"
DEADLINE_S = 30.0


class Node:
    """One registry node process."""

    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gridgate", "serve", "registry", "--port", "0"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        match = re.search(r"listening on (http://\S+)", line)
        assert match, f"unexpected first line: {line!r}"
        self.url = match.group(1)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture
def cluster_env(tmp_path: Path, redis_server: RedisServer) -> Iterator[dict[str, str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDGATE_")}
    env.update(
        {
            "GRIDGATE_DATA_DIR": str(tmp_path),
            "GRIDGATE_REDIS_URL": redis_server.url.replace("/0", "/3"),
            "GRIDGATE_LOG_LEVEL": "warning",
            # Short timings: a killed node and a silent instance are noticed within seconds.
            "GRIDGATE_REGISTRY_HEARTBEAT_S": "0.5",
            "GRIDGATE_REGISTRY_UNHEALTHY_S": "1.5",
            "GRIDGATE_REGISTRY_REMOVE_S": "3",
        }
    )

    async def prepare() -> None:
        await Redis.from_url(env["GRIDGATE_REDIS_URL"]).flushdb()
        runtime = Runtime.build(load_settings(data_dir=tmp_path).with_development_keys())
        try:
            await runtime.db.migrate()
            async with runtime.db.transaction() as session:
                await CatalogService(session, runtime.box, Actor("test")).create_business_system(
                    BusinessSystemCreate.model_validate(
                        {
                            "code": "billing",
                            "name": "电费",
                            "host": "10.0.0.1",
                            "port": 80,
                            "password": PASSWORD,
                        }
                    )
                )
        finally:
            await runtime.close()

    asyncio.run(prepare())
    yield env


@pytest.fixture
def nodes(cluster_env: dict[str, str]) -> Iterator[list[Node]]:
    started: list[Node] = []
    try:
        started.extend(Node(cluster_env) for _ in range(3))
        yield started
    finally:
        for node in started:
            node.stop()


async def _until(check: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
async def writer(nodes: list[Node]) -> AsyncIterator[RegistryClient]:
    client = RegistryClient([nodes[0].url], credentials=("billing", PASSWORD))
    try:
        yield client
    finally:
        await client.aclose()


def _reader(url: str) -> RegistryClient:
    return RegistryClient([url], credentials=("billing", PASSWORD), timeout_s=2)


async def _live_nodes(url: str) -> set[str]:
    client = _reader(url)
    try:
        answer = await client.request("GET", "/registry/v1/nodes")
        return {item["url"] for item in answer.json()["items"]}
    finally:
        await client.aclose()


async def test_three_nodes_survive_the_loss_of_one(
    nodes: list[Node], writer: RegistryClient, cluster_env: dict[str, str]
) -> None:
    a, b, c = nodes
    await _until(lambda: _count_is(b.url, 3), "three nodes")
    # A client that knows only node A learns B and C.
    learned = await writer.refresh_nodes()
    assert {a.url, b.url, c.url} <= set(learned)
    # Written through A, read through B and C: the nodes share one store.
    registration = writer.registration("billing", host="10.0.1.7", port=9104)
    handle = await registration.__aenter__()
    try:
        for node in (b, c):
            reader = _reader(node.url)
            _, found = await reader.instances("billing")
            await reader.aclose()
            assert [i.instance_id for i in found] == [handle.instance_id]
        watcher = Discovery(_reader(c.url), services=["billing"], watch_timeout_s=1)
        await watcher.start()

        a.kill()
        # The others go on answering; the client fails over; A drops out of the node list.
        await _until(lambda: _count_is(b.url, 2), "node A to expire")
        assert a.url not in await _live_nodes(c.url)
        second, _ = await writer.register("billing", "10.0.1.8", 9104)
        await _until(lambda: len(watcher.instances("billing")) == 2, "the watcher on C to see it")
        # Instance expiry needs no particular node: B and C sweep the silent one away.
        await _until(
            lambda: _healthy(b.url, second, healthy=False), "the silent instance to turn unhealthy"
        )
        assert (await _instance(c.url, handle.instance_id)).get(
            "healthy"
        ) is True  # heartbeats failed over

        # A fourth node joins without restarting anyone.
        d = Node(cluster_env)
        nodes.append(d)
        await _until(lambda: _count_is(b.url, 3), "node D to join")
        await writer.refresh_nodes()
        assert d.url in writer.urls
        await watcher.stop()
        await watcher.client.aclose()
    finally:
        await registration.__aexit__(None, None, None)


async def _count_is(url: str, count: int) -> bool:
    try:
        return len(await _live_nodes(url)) == count
    except Exception:  # a node still starting answers nothing yet
        return False


async def _instance(url: str, instance_id: str) -> dict[str, object]:
    client = _reader(url)
    try:
        answer = await client.request(
            "GET", "/registry/v1/services/billing/instances", params={"healthy_only": "false"}
        )
        return next((i for i in answer.json()["instances"] if i["instance_id"] == instance_id), {})
    finally:
        await client.aclose()


async def _healthy(url: str, instance_id: str, *, healthy: bool) -> bool:
    return (await _instance(url, instance_id)).get("healthy") is healthy
