"""The demo consultation system: receiving and reading consultations."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from gridgate.demo.data import FIRST_CUSTOMER_NO, DemoData
from gridgate.demo.systems.consultation import create_app
from tests.unit.demo.systems.helpers import assert_problem

CONSULTATIONS = "/api/v1/consultations"
NOW = datetime(2026, 11, 22, 4, 5, 6, tzinfo=UTC)


@pytest.fixture
async def consultation(data: DemoData) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the consultation system with a fixed clock."""
    transport = httpx.ASGITransport(app=create_app(data, clock=lambda: NOW))
    async with httpx.AsyncClient(transport=transport, base_url="http://demo.test") as http:
        yield http


async def test_a_consultation_is_received_and_can_be_read_back(
    consultation: httpx.AsyncClient,
) -> None:
    body = {
        "topic": "电价咨询",
        "content": "请问阶梯电价如何计算？",
        "customer_no": FIRST_CUSTOMER_NO,
    }
    answer = await consultation.post(CONSULTATIONS, json=body)
    assert answer.status_code == 201
    received = answer.json()
    assert received["status"] == "received"
    assert received["created_at"] == "2026-11-22T04:05:06Z"
    assert set(received) == {"consultation_id", "status", "created_at"}
    read = await consultation.get(f"{CONSULTATIONS}/{received['consultation_id']}")
    assert read.status_code == 200
    assert read.json() == {**received, **body}


async def test_a_customer_number_is_optional(consultation: httpx.AsyncClient) -> None:
    answer = await consultation.post(CONSULTATIONS, json={"topic": "停电", "content": "何时来电？"})
    assert answer.status_code == 201
    read = await consultation.get(f"{CONSULTATIONS}/{answer.json()['consultation_id']}")
    assert read.json()["customer_no"] is None


async def test_each_consultation_gets_its_own_id(consultation: httpx.AsyncClient) -> None:
    body = {"topic": "t", "content": "c"}
    first = await consultation.post(CONSULTATIONS, json=body)
    second = await consultation.post(CONSULTATIONS, json=body)
    assert first.json()["consultation_id"] != second.json()["consultation_id"]


async def test_an_unknown_customer_is_received_like_a_known_one(
    consultation: httpx.AsyncClient,
) -> None:
    # Anyone may submit: a different answer would tell which 户号 exist (issue 12, item 6).
    answers = [
        await consultation.post(
            CONSULTATIONS, json={"topic": "t", "content": "c", "customer_no": customer_no}
        )
        for customer_no in (FIRST_CUSTOMER_NO, "3399999999")
    ]
    assert [a.status_code for a in answers] == [201, 201]
    assert [set(a.json()) for a in answers] == [{"consultation_id", "status", "created_at"}] * 2
    read = await consultation.get(f"{CONSULTATIONS}/{answers[1].json()['consultation_id']}")
    assert read.json()["customer_no"] == "3399999999"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"content": "c"}, "topic"),
        ({"topic": "", "content": "c"}, "topic"),
        ({"topic": "   ", "content": "c"}, "topic"),
        ({"topic": "t" * 65, "content": "c"}, "topic"),
        ({"topic": "t", "content": "c" * 2001}, "content"),
        ({"topic": "t", "content": 5}, "content"),
        ({"topic": "t", "content": "c", "customer_no": "33"}, "customer_no"),
        ({"topic": "t", "content": "c", "priority": "high"}, "priority"),
    ],
)
async def test_a_malformed_consultation_is_invalid(
    consultation: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    answer = await consultation.post(CONSULTATIONS, json=body)
    assert assert_problem(answer, 422, "request.invalid")["field"] == field


async def test_the_longest_topic_and_content_are_accepted(consultation: httpx.AsyncClient) -> None:
    answer = await consultation.post(
        CONSULTATIONS, json={"topic": "题" * 64, "content": "问" * 2000}
    )
    assert answer.status_code == 201


async def test_an_unknown_consultation_is_not_found(consultation: httpx.AsyncClient) -> None:
    assert_problem(await consultation.get(f"{CONSULTATIONS}/ZX000"), 404, "not_found")
