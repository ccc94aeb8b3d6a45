"""The registry store contract, run against the memory and the Redis implementation alike."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gridgate.errors import InvalidRequest, NotFound
from gridgate.registry.interfaces import (
    Changes,
    ForeignInstance,
    Instance,
    InvalidInstance,
    RegistryStore,
    UnknownInstance,
)
from tests.unit.registry.conftest import FakeClock

#: Long enough never to cut a passing test short; a failing one still ends.
GUARD_S = 10


async def add(store: RegistryStore, port: int = 8080, **options: Any) -> Instance:
    """Register an instance of ``billing`` (or ``service=``) at ``10.0.0.1:port``."""
    values: dict[str, Any] = {"service": "billing", "host": "10.0.0.1", "owner": "billing"}
    values.update(options)
    return await store.register(values.pop("service"), values.pop("host"), port, **values)


async def kinds(store: RegistryStore, since: int = 0) -> list[tuple[str, str]]:
    """The (kind, instance id) of every change after ``since``."""
    result = await store.changes_since(since)
    assert not result.snapshot
    return [(change.kind, change.instance_id) for change in result.changes]


async def test_register_returns_a_healthy_instance(store: RegistryStore, clock: FakeClock) -> None:
    metadata = {"version": "2.1.0", "机房": "北京"}
    inst = await add(store, weight=40, zone="bj-a", metadata=metadata, owner="billing")

    assert (inst.service, inst.host, inst.port, inst.weight) == ("billing", "10.0.0.1", 8080, 40)
    assert (inst.zone, inst.metadata, inst.owner) == ("bj-a", metadata, "billing")
    assert inst.healthy
    assert inst.registered_at == inst.last_heartbeat == clock.now
    revision, listed = await store.instances("billing")
    assert listed == [inst]
    assert revision == 1
    assert await store.get(inst.instance_id) == inst


async def test_reregistering_the_same_address_keeps_the_id(store: RegistryStore) -> None:
    first = await add(store, weight=100)
    again = await add(store, weight=50, metadata={"version": "2"})

    assert again.instance_id == first.instance_id
    assert again.weight == 50
    assert again.metadata == {"version": "2"}
    assert again.registered_at == first.registered_at
    assert (await store.instances("billing"))[1] == [again]
    assert await kinds(store) == [
        ("registered", first.instance_id),
        ("updated", first.instance_id),
    ]


async def test_reregistering_unchanged_announces_nothing(store: RegistryStore) -> None:
    await add(store, metadata={})
    revision, _ = await store.instances("billing")
    await add(store, metadata={})
    assert (await store.changes_since(revision)).changes == []


async def test_a_service_has_many_instances_from_many_systems(store: RegistryStore) -> None:
    a = await add(store, 8080, owner="billing")
    b = await add(store, 8081, owner="billing")
    c = await add(store, 8080, host="10.0.0.2", owner="marketing")
    other = await add(store, 8080, service="payment")

    assert len({a.instance_id, b.instance_id, c.instance_id, other.instance_id}) == 4
    _, listed = await store.instances("billing")
    assert [i.instance_id for i in listed] == [a.instance_id, b.instance_id, c.instance_id]
    assert [i.owner for i in listed] == ["billing", "billing", "marketing"]
    summary = [(s.service, s.instances, s.healthy) for s in await store.services()]
    assert summary == [("billing", 3, 3), ("payment", 1, 1)]


async def test_heartbeats_keep_an_instance_healthy(store: RegistryStore, clock: FakeClock) -> None:
    inst = await add(store)
    for _ in range(4):
        clock.advance(10)
        beat = await store.heartbeat(inst.instance_id)
        assert beat.last_heartbeat == clock.now
        assert await store.sweep() == 0

    _, listed = await store.instances("billing")
    assert [i.healthy for i in listed] == [True]


async def test_silent_instance_turns_unhealthy_then_is_removed(
    store: RegistryStore, clock: FakeClock
) -> None:
    inst = await add(store)

    clock.advance(14)
    assert await store.sweep() == 0
    assert [i.healthy for i in (await store.instances("billing"))[1]] == [True]

    clock.advance(1.5)
    assert await store.sweep() == 1
    assert (await store.instances("billing", healthy_only=True))[1] == []
    everyone = (await store.instances("billing", healthy_only=False))[1]
    assert [(i.instance_id, i.healthy) for i in everyone] == [(inst.instance_id, False)]
    assert [(s.instances, s.healthy) for s in await store.services()] == [(1, 0)]

    clock.advance(15)
    assert await store.sweep() == 1
    assert (await store.instances("billing", healthy_only=False))[1] == []
    assert await store.services() == []
    with pytest.raises(UnknownInstance):
        await store.heartbeat(inst.instance_id)
    assert await kinds(store) == [
        ("registered", inst.instance_id),
        ("unhealthy", inst.instance_id),
        ("removed", inst.instance_id),
    ]


async def test_a_heartbeat_makes_an_unhealthy_instance_healthy(
    store: RegistryStore, clock: FakeClock
) -> None:
    inst = await add(store)
    clock.advance(20)
    await store.sweep()

    beat = await store.heartbeat(inst.instance_id)

    assert beat.healthy
    assert [i.healthy for i in (await store.instances("billing"))[1]] == [True]
    result = await store.changes_since(2)
    assert [(c.kind, c.instance) for c in result.changes] == [("healthy", beat)]


async def test_another_systems_heartbeat_changes_nothing(
    store: RegistryStore, clock: FakeClock
) -> None:
    inst = await add(store, owner="billing")
    clock.advance(20)
    await store.sweep()  # unhealthy now
    revision = (await store.changes_since(0)).revision

    with pytest.raises(ForeignInstance) as refused:
        await store.heartbeat(inst.instance_id, owner="marketing")

    assert refused.value.instance.service == "billing"
    assert refused.value.instance.owner == "billing"
    after = await store.get(inst.instance_id)
    assert after is not None
    assert (after.healthy, after.last_heartbeat) == (False, inst.last_heartbeat)
    assert (await store.changes_since(0)).revision == revision
    beat = await store.heartbeat(inst.instance_id, owner="billing")
    assert beat.healthy and beat.last_heartbeat == clock.now


async def test_reregistering_after_removal_is_a_new_instance(store: RegistryStore) -> None:
    first = await add(store)
    await store.deregister(first.instance_id)
    again = await add(store)
    assert again.instance_id != first.instance_id
    assert (await kinds(store))[-1] == ("registered", again.instance_id)


async def test_protection_threshold_hands_out_every_instance(
    store: RegistryStore, clock: FakeClock
) -> None:
    instances = [await add(store, port) for port in (8080, 8081, 8082, 8083)]
    clock.advance(10)
    for inst in instances[:2]:
        await store.heartbeat(inst.instance_id)
    clock.advance(6)
    assert await store.sweep() == 2

    # Default threshold 0: only the healthy half.
    assert [i.port for i in (await store.instances("billing"))[1]] == [8080, 8081]

    await store.configure_service("billing", protect_threshold=0.6)
    listed = (await store.instances("billing"))[1]
    assert [(i.port, i.healthy) for i in listed] == [
        (8080, True),
        (8081, True),
        (8082, False),
        (8083, False),
    ]

    await store.configure_service("billing", protect_threshold=0.5)  # 2/4 is not below 0.5
    assert [i.port for i in (await store.instances("billing"))[1]] == [8080, 8081]


async def test_protection_threshold_is_checked(store: RegistryStore) -> None:
    with pytest.raises(InvalidInstance) as caught:
        await store.configure_service("billing", protect_threshold=1.5)
    assert caught.value.field == "protect_threshold"


async def test_an_unknown_service_has_no_instances(store: RegistryStore) -> None:
    await add(store)
    assert await store.instances("nobody", healthy_only=False) == (1, [])


async def test_revisions_strictly_increase(store: RegistryStore, clock: FakeClock) -> None:
    a = await add(store, 8080)
    b = await add(store, 8081)
    await add(store, 8081, weight=10)
    clock.advance(16)
    await store.sweep()
    await store.heartbeat(a.instance_id)
    await store.deregister(b.instance_id)

    result = await store.changes_since(0)
    revisions = [change.revision for change in result.changes]
    assert revisions == sorted(set(revisions))
    assert len(revisions) == 7
    assert result.revision == revisions[-1] == (await store.instances("billing"))[0]


async def test_a_watcher_that_was_away_gets_every_missed_change_in_order(
    store: RegistryStore, clock: FakeClock
) -> None:
    a = await add(store, 8080)
    seen, _ = await store.instances("billing")
    # The watcher "disconnects" here; all of this happens while it is away.
    b = await add(store, 8081)
    await add(store, 8080, weight=5)
    clock.advance(16)
    await store.heartbeat(b.instance_id)
    await store.sweep()
    await store.deregister(b.instance_id)

    expected = [
        ("registered", b.instance_id),
        ("updated", a.instance_id),
        ("unhealthy", a.instance_id),
        ("removed", b.instance_id),
    ]
    assert await kinds(store, seen) == expected

    # Paging through with a small limit loses nothing either.
    paged: list[tuple[str, str]] = []
    revision = seen
    while True:
        page = await store.changes_since(revision, limit=3)
        if not page.changes:
            break
        paged += [(c.kind, c.instance_id) for c in page.changes]
        revision = page.revision
    assert paged == expected
    assert (await store.changes_since(revision)).changes == []


@pytest.mark.parametrize("log_size", [5])
async def test_a_watcher_too_far_behind_must_reload(store: RegistryStore) -> None:
    # Well past the log size: Redis trims its stream in whole nodes (MAXLEN ~).
    for port in range(1000, 1150):
        await add(store, port)
    current, _ = await store.instances("billing", healthy_only=False)

    behind = await store.changes_since(0)
    assert behind.snapshot
    assert behind.changes == []
    assert behind.revision == current

    recent = await store.changes_since(current - 3)
    assert not recent.snapshot
    assert [c.instance.port for c in recent.changes if c.instance] == [1147, 1148, 1149]

    # A revision this store never reached comes from another history (Redis lost its data).
    assert (await store.changes_since(current + 10)).snapshot


async def test_a_waiting_watcher_wakes_when_another_task_changes(store: RegistryStore) -> None:
    revision, _ = await store.instances("billing")
    # The wait outlasts the guard, so only a wake-up by the change can pass the test.
    waiter = asyncio.create_task(store.wait_for_changes(revision, timeout_s=6 * GUARD_S))
    await asyncio.sleep(0)  # let the watcher start waiting

    inst = await add(store)

    result = await asyncio.wait_for(waiter, GUARD_S)
    assert [(c.kind, c.instance_id) for c in result.changes] == [("registered", inst.instance_id)]
    assert result.revision == revision + 1


async def test_a_change_landing_just_before_the_wait_is_not_missed(
    store: RegistryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    read_first = store.changes_since
    landed: list[Instance] = []

    async def read_then_change(revision: int, *, limit: int = 1000) -> Changes:
        result = await read_first(revision, limit=limit)
        if not landed:  # another node registers right after the watcher found nothing new
            landed.append(await add(store))
        return result

    monkeypatch.setattr(store, "changes_since", read_then_change)
    result = await asyncio.wait_for(store.wait_for_changes(0, timeout_s=6 * GUARD_S), GUARD_S)
    assert [c.instance_id for c in result.changes] == [landed[0].instance_id]


async def test_waiting_answers_at_once_when_changes_are_already_there(
    store: RegistryStore,
) -> None:
    inst = await add(store)
    result = await asyncio.wait_for(store.wait_for_changes(0, timeout_s=6 * GUARD_S), GUARD_S)
    assert [c.instance_id for c in result.changes] == [inst.instance_id]


async def test_waiting_without_changes_times_out_empty(store: RegistryStore) -> None:
    await add(store)
    result = await store.wait_for_changes(1, timeout_s=0.2)
    assert (result.revision, result.changes, result.snapshot) == (1, [], False)


async def test_a_cancelled_watcher_leaves_the_store_working(store: RegistryStore) -> None:
    # A long poll is cancelled whenever its HTTP client goes away; the connection it held must
    # not hand a late answer to the next caller.
    waiter = asyncio.create_task(store.wait_for_changes(0, timeout_s=6 * GUARD_S))
    for _ in range(20):
        await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter

    inst = await add(store)
    assert await store.instances("billing") == (1, [inst])
    assert await kinds(store) == [("registered", inst.instance_id)]


async def test_concurrent_sweeps_announce_each_change_once(
    store: RegistryStore, clock: FakeClock
) -> None:
    ids = {(await add(store, port)).instance_id for port in (8080, 8081, 8082)}

    clock.advance(16)
    assert sum(await asyncio.gather(store.sweep(), store.sweep())) == 3
    clock.advance(15)
    assert sum(await asyncio.gather(store.sweep(), store.sweep(), store.sweep())) == 3

    changes = await kinds(store, 3)
    assert sorted(changes) == sorted(
        [("unhealthy", i) for i in ids] + [("removed", i) for i in ids]
    )


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"service": "Billing"}, "service"),
        ({"service": ""}, "service"),
        ({"service": "b" * 129}, "service"),
        ({"host": "bad host!"}, "host"),
        ({"host": ""}, "host"),
        ({"port": 0}, "port"),
        ({"port": 65536}, "port"),
        ({"weight": -1}, "weight"),
        ({"weight": 101}, "weight"),
        ({"weight": True}, "weight"),
        ({"zone": "bad zone"}, "zone"),
        ({"metadata": {f"k{n}": "v" for n in range(33)}}, "metadata"),
        ({"metadata": {"blob": "x" * 5000}}, "metadata"),
        ({"owner": ""}, "owner"),
    ],
)
async def test_bad_registrations_name_the_field(
    store: RegistryStore, options: dict[str, Any], field: str
) -> None:
    values: dict[str, Any] = {"port": 8080, **options}
    with pytest.raises(InvalidInstance) as caught:
        await add(store, values.pop("port"), **values)
    assert caught.value.field == field
    assert isinstance(caught.value, InvalidRequest)  # answered 422 by the web layer
    assert await store.services() == []


async def test_hosts_are_normalized_so_one_address_is_one_instance(store: RegistryStore) -> None:
    a = await add(store, host="0:0::1")
    b = await add(store, host="::1")
    c = await add(store, host="Billing-1.Grid.Local")
    assert a.instance_id == b.instance_id
    assert (a.host, c.host) == ("::1", "billing-1.grid.local")


async def test_deregistering_removes_the_instance(store: RegistryStore) -> None:
    inst = await add(store)
    await store.deregister(inst.instance_id)

    assert (await store.instances("billing", healthy_only=False))[1] == []
    result = await store.changes_since(1)
    assert [(c.kind, c.instance_id, c.instance) for c in result.changes] == [
        ("removed", inst.instance_id, None)
    ]
    assert await store.get(inst.instance_id) is None
    with pytest.raises(UnknownInstance) as caught:
        await store.deregister(inst.instance_id)
    assert isinstance(caught.value, NotFound)  # answered 404: the client registers again
    with pytest.raises(UnknownInstance):
        await store.heartbeat("no-such-id")


async def test_nodes_announce_themselves_and_expire(store: RegistryStore, clock: FakeClock) -> None:
    await store.register_node("node-a", "http://10.0.1.1:8070")
    await store.register_node("node-b", "http://10.0.1.2:8070")
    assert [(n.node_id, n.url) for n in await store.nodes()] == [
        ("node-a", "http://10.0.1.1:8070"),
        ("node-b", "http://10.0.1.2:8070"),
    ]

    clock.advance(20)
    await store.register_node("node-a", "http://10.0.1.1:8070")
    clock.advance(15)  # node-b silent for 35 s, node-a for 15 s
    nodes = await store.nodes()
    assert [(n.node_id, n.last_seen) for n in nodes] == [("node-a", clock.now - 15)]

    await store.remove_node("node-a")
    assert await store.nodes() == []


async def test_the_store_answers_ping(store: RegistryStore) -> None:
    assert await store.ping()


@pytest.mark.parametrize("clock", [None])
async def test_the_stores_own_clock(store: RegistryStore) -> None:
    inst = await add(store)
    beat = await store.heartbeat(inst.instance_id)
    assert beat.last_heartbeat >= inst.registered_at
    assert await store.sweep() == 0
    await store.register_node("node-a", "http://10.0.1.1:8070")
    assert [n.node_id for n in await store.nodes()] == ["node-a"]


async def test_revision_is_the_one_instances_report(store: RegistryStore) -> None:
    assert await store.revision() == 0
    await store.register("billing", "10.0.0.1", 80, owner="billing")
    revision, _ = await store.instances("billing")
    assert await store.revision() == revision >= 1
    await store.heartbeat((await store.instances("billing"))[1][0].instance_id)
    assert await store.revision() == revision  # heartbeats of a healthy instance change nothing
