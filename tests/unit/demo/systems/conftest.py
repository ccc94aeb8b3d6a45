"""Fixtures of the demo business system tests: fresh data and an in-process client per system."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.types import ASGIApp

from gridgate.demo.data import DemoData, generate_demo_data
from gridgate.demo.systems import SYSTEMS


@pytest.fixture
def data() -> DemoData:
    """A small data set of its own for each test: the payment system changes it."""
    return generate_demo_data(customer_count=20)


async def _client(app: ASGIApp) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://demo.test") as http:
        yield http


@pytest.fixture
async def marketing(data: DemoData) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the marketing system."""
    async for http in _client(SYSTEMS["marketing"](data)):
        yield http


@pytest.fixture
async def billing(data: DemoData) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the billing system."""
    async for http in _client(SYSTEMS["billing"](data)):
        yield http


@pytest.fixture
async def payment(data: DemoData) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the payment system (over the same data as ``billing``)."""
    async for http in _client(SYSTEMS["payment"](data)):
        yield http


@pytest.fixture
async def notices(data: DemoData) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the notices system."""
    async for http in _client(SYSTEMS["notices"](data)):
        yield http
