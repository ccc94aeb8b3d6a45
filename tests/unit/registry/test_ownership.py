"""Service ownership: the rule, its catalog cache, the audit throttle, and the write routes."""

from __future__ import annotations

import httpx
import pytest

from gridgate.catalog.schemas import BusinessSystemCreate, InterfaceCreate
from gridgate.catalog.services import CatalogService
from gridgate.operators.audit import Actor
from gridgate.registry.interfaces import Timings
from gridgate.registry.ownership import CatalogOwnership, Ownership, Refusal, RefusalThrottle
from gridgate.registry.testing import InProcessRegistry, in_process_registry
from gridgate.runtime import Runtime
from tests.unit.registry.conftest import FakeClock

SYSTEMS = {"accounts": "pw-accounts-001", "marketing": "pw-marketing-01", "billing": "pw-bill-0001"}
NOT_OWNED = "registry.service_not_owned"

OWNERSHIP = Ownership(
    codes=frozenset({"accounts", "billing", "marketing"}),
    providers={
        "billing-api": frozenset({"billing"}),
        "shared": frozenset({"billing", "marketing"}),
    },
)


@pytest.mark.parametrize(
    ("system", "service", "owned"),
    [
        ("accounts", "accounts", True),  # its own code
        ("marketing", "accounts", False),  # another system's code
        ("billing", "billing-api", True),  # targeted by its interface
        ("marketing", "billing-api", False),
        ("marketing", "shared", True),  # two providers: both own it
        ("billing", "shared", True),
        ("billing", "nobody", False),  # no system, no interface: no one's
    ],
)
def test_the_ownership_rule(system: str, service: str, owned: bool) -> None:
    assert OWNERSHIP.owns(system, service) is owned


def test_a_code_beats_an_interface_targeting_it() -> None:
    # load_ownership leaves such targets out; the rule holds on its own as well.
    ownership = Ownership(frozenset({"accounts"}), {"accounts": frozenset({"marketing"})})
    assert not ownership.owns("marketing", "accounts")
    assert ownership.owns("accounts", "accounts")


# -- the audit throttle --------------------------------------------------------------------


def _refusal(system: str = "marketing", service: str = "accounts", op: str = "register") -> Refusal:
    return Refusal(system, op, service, NOT_OWNED)  # type: ignore[arg-type]


def test_a_repeated_refusal_is_audited_once_per_window() -> None:
    clock = FakeClock()
    throttle = RefusalThrottle(window_s=60, per_system=20, clock=clock)
    assert throttle.admit(_refusal()) == 0
    assert [throttle.admit(_refusal()) for _ in range(5)] == [None] * 5
    assert throttle.admit(_refusal(op="heartbeat")) == 5  # another operation; reports the 5
    clock.advance(61)
    assert throttle.admit(_refusal()) == 0


def test_each_system_has_a_budget_of_events_per_window() -> None:
    clock = FakeClock()
    throttle = RefusalThrottle(window_s=60, per_system=3, clock=clock)
    admitted = [throttle.admit(_refusal(service=f"s{n}")) for n in range(5)]
    assert admitted == [0, 0, 0, None, None]
    assert throttle.admit(_refusal("billing")) == 0  # other systems are not held back
    clock.advance(60)
    assert throttle.admit(_refusal(service="s9")) == 2


# -- the catalog-backed ownership ------------------------------------------------------------


async def _catalog(runtime: Runtime, *codes: str) -> None:
    async with runtime.db.transaction() as session:
        catalog = CatalogService(session, runtime.box, Actor("test"))
        for code in codes:
            await catalog.create_business_system(
                BusinessSystemCreate.model_validate(
                    {"code": code, "name": code, "host": "10.0.0.1", "port": 80}
                )
            )


async def _interface(runtime: Runtime, provider: str, target: str) -> None:
    async with runtime.db.transaction() as session:
        await CatalogService(session, runtime.box, Actor("test")).create_interface(
            InterfaceCreate.model_validate(
                {
                    "code": f"{provider}.{target}",
                    "name": target,
                    "method": "GET",
                    "path": f"/api/{provider}/{target}",
                    "provider": provider,
                    "target_service": target,
                }
            )
        )


async def test_catalog_ownership_follows_interfaces(runtime: Runtime) -> None:
    await _catalog(runtime, "billing", "marketing", "accounts")
    await _interface(runtime, "billing", "billing-api")
    await _interface(runtime, "marketing", "accounts")  # a code: stays the accounts system's
    clock = FakeClock()
    owners = CatalogOwnership(runtime.db, ttl_s=30, recheck_s=1, clock=clock)

    assert await owners.owns("billing", "billing-api")
    assert not await owners.owns("marketing", "billing-api")
    assert not await owners.owns("marketing", "accounts")
    assert await owners.owns("accounts", "accounts")

    # A new interface: a refusal re-reads the catalog once the last read is a second old.
    await _interface(runtime, "marketing", "marketing-api")
    assert not await owners.owns("marketing", "marketing-api")
    clock.advance(1.5)
    assert await owners.owns("marketing", "marketing-api")


# -- the write routes ------------------------------------------------------------------------


@pytest.fixture
async def registry(clock: FakeClock) -> InProcessRegistry:
    async with in_process_registry(
        SYSTEMS,
        token="read-token",
        timings=Timings(heartbeat_interval_s=5, unhealthy_after_s=15, remove_after_s=30),
        clock=clock,
        services={"billing": ["shared"], "marketing": ["shared"]},
    ) as found:
        yield found  # type: ignore[misc]


def _http(registry: InProcessRegistry, system: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=registry.app),
        base_url="http://registry.test",
        auth=(system, SYSTEMS[system]),
    )


async def test_an_instance_registered_before_the_rule_goes_at_its_next_heartbeat(
    registry: InProcessRegistry,
) -> None:
    # As if registered before ownership was checked: marketing holds an accounts instance.
    stolen = await registry.store.register("accounts", "10.66.0.1", 9101, owner="marketing")
    async with _http(registry, "marketing") as marketing:
        answer = await marketing.put(f"/registry/v1/instances/{stolen.instance_id}/heartbeat")
    assert answer.status_code == 403 and answer.json()["code"] == NOT_OWNED
    assert await registry.store.get(stolen.instance_id) is None
    [refusal] = registry.auth.refusals
    assert (refusal.system, refusal.operation, refusal.service) == (
        "marketing",
        "heartbeat",
        "accounts",
    )
    assert (refusal.instance_id, refusal.host, refusal.code) == (
        stolen.instance_id,
        "10.66.0.1",
        NOT_OWNED,
    )


async def test_a_system_may_always_remove_its_own_instance(registry: InProcessRegistry) -> None:
    stolen = await registry.store.register("accounts", "10.66.0.1", 9101, owner="marketing")
    async with _http(registry, "marketing") as marketing:
        answer = await marketing.delete(f"/registry/v1/instances/{stolen.instance_id}")
    assert answer.status_code == 204
    assert registry.auth.refusals == []


async def test_co_owners_cannot_renew_each_others_instances(
    registry: InProcessRegistry, clock: FakeClock
) -> None:
    async with _http(registry, "billing") as billing, _http(registry, "marketing") as marketing:
        created = await billing.post(
            "/registry/v1/instances", json={"service": "shared", "host": "10.0.0.5", "port": 80}
        )
        assert created.status_code == 201
        instance_id = created.json()["instance_id"]
        before = await registry.store.get(instance_id)
        clock.advance(10)
        answer = await marketing.put(f"/registry/v1/instances/{instance_id}/heartbeat")
        assert answer.status_code == 403 and answer.json()["code"] == "perm.denied"
        assert await registry.store.get(instance_id) == before  # not renewed
        assert (await marketing.delete(f"/registry/v1/instances/{instance_id}")).status_code == 403
        assert [r.code for r in registry.auth.refusals] == ["perm.denied", "perm.denied"]
        assert (
            await billing.put(f"/registry/v1/instances/{instance_id}/heartbeat")
        ).status_code == 204


async def test_bad_bodies_are_422_before_ownership(registry: InProcessRegistry) -> None:
    async with _http(registry, "marketing") as marketing:
        answer = await marketing.post(
            "/registry/v1/instances", json={"service": "accounts", "host": "not a host!", "port": 1}
        )
    assert answer.status_code == 422 and answer.json()["field"] == "host"
    assert registry.auth.refusals == []


async def test_the_sdk_reports_a_refused_registration(registry: InProcessRegistry) -> None:
    client = registry.client(credentials=("marketing", SYSTEMS["marketing"]))
    with pytest.raises(httpx.HTTPStatusError) as caught:
        async with client.registration("accounts", host="10.66.0.1", port=9101):
            pass
    assert caught.value.response.status_code == 403
    assert caught.value.response.json() | {"trace_id": None} == {
        "type": f"urn:gridgate:error:{NOT_OWNED}",
        "title": "Service owned by another business system",
        "status": 403,
        "detail": "service 'accounts' does not belong to business system 'marketing'",
        "code": NOT_OWNED,
        "service": "accounts",
        "trace_id": None,
    }
    assert (await registry.store.instances("accounts", healthy_only=False))[1] == []
    await client.aclose()
