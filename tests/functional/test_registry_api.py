"""The registry listener over HTTP, with business-system credentials from the catalog."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import pytest

from gridgate.app import build_registry
from gridgate.catalog.schemas import BusinessSystemCreate
from gridgate.catalog.services import CatalogService
from gridgate.operators.audit import Actor
from gridgate.runtime import Runtime

PASSWORDS = {"billing": "billing-password-1", "marketing": "marketing-password-1"}


def _basic(code: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{code}:{password}".encode()).decode()}


BILLING = _basic("billing", PASSWORDS["billing"])
MARKETING = _basic("marketing", PASSWORDS["marketing"])


@pytest.fixture
async def registry(runtime: Runtime) -> httpx.AsyncClient:
    async with runtime.db.transaction() as session:
        catalog = CatalogService(session, runtime.box, Actor("test"))
        for code, password in PASSWORDS.items():
            await catalog.create_business_system(
                BusinessSystemCreate.model_validate(
                    {
                        "code": code,
                        "name": code,
                        "host": "10.0.0.1",
                        "port": 80,
                        "password": password,
                    }
                )
            )
    transport = httpx.ASGITransport(app=build_registry(runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://registry.test") as client:
        yield client  # type: ignore[misc]


def _token(runtime: Runtime) -> dict[str, str]:
    assert runtime.settings.registry_token is not None
    return {"Authorization": f"Bearer {runtime.settings.registry_token.get_secret_value()}"}


async def _register(client: httpx.AsyncClient, **body: Any) -> httpx.Response:
    return await client.post(
        "/registry/v1/instances",
        json={"service": "billing", "host": "10.0.1.7", "port": 9104, **body},
        headers=BILLING,
    )


async def test_register_discover_heartbeat_deregister(
    registry: httpx.AsyncClient, runtime: Runtime
) -> None:
    created = await _register(registry, weight=30, zone="room-a", metadata={"version": "1.2"})
    assert created.status_code == 201
    body = created.json()
    assert body["heartbeat_interval_s"] == runtime.settings.registry_heartbeat_s
    instance_id = body["instance_id"]
    found = (
        await registry.get("/registry/v1/services/billing/instances", headers=_token(runtime))
    ).json()
    assert found["revision"] >= 1
    assert found["instances"] == [
        {
            "instance_id": instance_id,
            "service": "billing",
            "host": "10.0.1.7",
            "port": 9104,
            "weight": 30,
            "zone": "room-a",
            "metadata": {"version": "1.2"},
            "healthy": True,
        }
    ]
    services = (await registry.get("/registry/v1/services", headers=MARKETING)).json()
    assert services["items"] == [{"service": "billing", "instances": 1, "healthy": 1}]
    assert (
        await registry.put(f"/registry/v1/instances/{instance_id}/heartbeat", headers=BILLING)
    ).status_code == 204
    assert (
        await registry.delete(f"/registry/v1/instances/{instance_id}", headers=BILLING)
    ).status_code == 204
    gone = await registry.put(f"/registry/v1/instances/{instance_id}/heartbeat", headers=BILLING)
    assert gone.status_code == 404 and gone.json()["code"] == "not_found"
    # The node's cached answer does not outlive the change.
    after = await registry.get("/registry/v1/services/billing/instances", headers=_token(runtime))
    assert after.json()["instances"] == [] and after.json()["revision"] > found["revision"]


async def test_watch_reports_changes_after_a_revision(
    registry: httpx.AsyncClient, runtime: Runtime
) -> None:
    start = (
        await registry.get(
            "/registry/v1/watch", params={"revision": 0, "timeout": 0}, headers=_token(runtime)
        )
    ).json()["revision"]
    await _register(registry)
    answer = (
        await registry.get(
            "/registry/v1/watch", params={"revision": start, "timeout": 5}, headers=_token(runtime)
        )
    ).json()
    assert [(c["kind"], c["service"]) for c in answer["changes"]] == [("registered", "billing")]
    assert answer["revision"] > start and answer["snapshot"] is False
    idle = (
        await registry.get(
            "/registry/v1/watch",
            params={"revision": answer["revision"], "timeout": 0.1},
            headers=_token(runtime),
        )
    ).json()
    assert idle["changes"] == [] and idle["revision"] == answer["revision"]


async def test_unknown_service_is_an_empty_list(
    registry: httpx.AsyncClient, runtime: Runtime
) -> None:
    answer = await registry.get("/registry/v1/services/nobody/instances", headers=_token(runtime))
    assert answer.status_code == 200 and answer.json()["instances"] == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"host": "not a host!"}, "host"),
        ({"host": ""}, "host"),
        ({"port": 0}, "port"),
        ({"port": 70000}, "port"),
        ({"port": "80"}, "port"),
        ({"weight": 101}, "weight"),
        ({"weight": -1}, "weight"),
        ({"weight": True}, "weight"),
        ({"service": "Bad Service"}, "service"),
        ({"metadata": {"k": 1}}, "metadata"),
        ({"surprise": 1}, "surprise"),
    ],
)
async def test_bad_instances_are_422(
    registry: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    answer = await _register(registry, **body)
    assert answer.status_code == 422
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["field"] == field


@pytest.mark.parametrize(
    "headers",
    [
        {},
        _basic("billing", "wrong"),
        _basic("ghost", "whatever"),
        {"Authorization": "Basic !!!"},
        {"Authorization": "Bearer nope"},
    ],
)
async def test_wrong_credentials_are_401(
    registry: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    answer = await registry.post(
        "/registry/v1/instances",
        json={"service": "billing", "host": "10.0.0.1", "port": 80},
        headers=headers,
    )
    assert answer.status_code == 401
    assert answer.json()["code"] in {"auth.required", "auth.bad_credentials"}
    reads = await registry.get("/registry/v1/services", headers=headers)
    assert reads.status_code == 401


async def test_instances_belong_to_their_business_system(registry: httpx.AsyncClient) -> None:
    instance_id = (await _register(registry)).json()["instance_id"]
    for answer in (
        await registry.delete(f"/registry/v1/instances/{instance_id}", headers=MARKETING),
        await registry.put(f"/registry/v1/instances/{instance_id}/heartbeat", headers=MARKETING),
        await registry.post(
            "/registry/v1/instances",
            json={"service": "billing", "host": "10.0.1.8", "port": 9104},
            headers=MARKETING,
        ),
    ):
        assert answer.status_code == 403
        assert answer.json()["code"] == "registry.service_not_owned"
    found = await registry.get("/registry/v1/services/billing/instances", headers=MARKETING)
    assert [i["instance_id"] for i in found.json()["instances"]] == [instance_id]


async def test_malformed_bodies_and_queries(registry: httpx.AsyncClient, runtime: Runtime) -> None:
    for content in (b"{", b"[]", b"null", b"\xff"):
        answer = await registry.post("/registry/v1/instances", content=content, headers=BILLING)
        assert answer.status_code == 422, content
    for params in ({"revision": "x"}, {"revision": -1}, {"timeout": 99}, {"service": "Bad!"}):
        answer = await registry.get("/registry/v1/watch", params=params, headers=_token(runtime))
        assert answer.status_code == 422, params
