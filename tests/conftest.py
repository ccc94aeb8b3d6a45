"""Fixtures shared by every test: databases on SQLite and PostgreSQL, settings, the admin API."""

from __future__ import annotations

import asyncio
import itertools
import shutil
from collections.abc import AsyncIterator, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from gridgate.app import build_admin
from gridgate.operators.audit import Actor
from gridgate.operators.schemas import OperatorCreate
from gridgate.operators.services import OperatorService
from gridgate.runtime import Runtime
from gridgate.settings import Settings, new_key
from gridgate.storage.db import Database
from tests.support.postgres import PostgresServer
from tests.support.redis import RedisServer

ENGINES = ["sqlite", "postgresql"]
ADMIN_PASSWORD = "correct-horse-battery"
_counter = itertools.count()


def _run_sync(coro: Coroutine[Any, Any, None]) -> None:
    # Session fixtures may first be requested from inside a running test loop.
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, coro).result()


async def _migrate(url: str) -> None:
    db = Database(url)
    try:
        await db.migrate()
    finally:
        await db.dispose()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL server for the whole session."""
    server = PostgresServer.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One throwaway Redis server for the whole session."""
    server = RedisServer.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def pg_template(postgres: PostgresServer) -> str:
    """A migrated database each test clones (CREATE DATABASE … TEMPLATE is fast)."""

    async def create() -> None:
        conn = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{postgres.port}/postgres")
        try:
            await conn.execute("CREATE DATABASE gridgate_template")
        finally:
            await conn.close()
        await _migrate(f"{postgres.url}/gridgate_template")

    _run_sync(create())
    return "gridgate_template"


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file each test copies."""
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    _run_sync(_migrate(f"sqlite+aiosqlite:///{path}"))
    return path


@pytest.fixture(params=ENGINES)
async def database_url(
    request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path
) -> AsyncIterator[str]:
    """A fresh, migrated database on each engine."""
    if request.param == "sqlite":
        target = tmp_path / "gridgate.db"
        shutil.copy(sqlite_template, target)
        yield f"sqlite+aiosqlite:///{target}"
        return
    server: PostgresServer = request.getfixturevalue("postgres")
    template: str = request.getfixturevalue("pg_template")
    name = f"test_{next(_counter)}"
    conn = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{server.port}/postgres")
    try:
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE {template}')
    finally:
        await conn.close()
    yield f"{server.url}/{name}"


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """Settings for a test: its own data dir and fresh keys."""
    values: dict[str, Any] = {
        "data_dir": tmp_path,
        "secret_key": new_key(),
        "data_key": new_key(),
        "registry_token": new_key(),
        **overrides,
    }
    return Settings(**values)


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return make_settings(tmp_path, database_url=database_url)


@pytest.fixture
async def runtime(settings: Settings) -> AsyncIterator[Runtime]:
    built = Runtime.build(settings)
    try:
        yield built
    finally:
        await built.close()


async def add_operator(runtime: Runtime, username: str, roles: list[str]) -> None:
    """Create an operator directly through the service."""
    async with runtime.db.transaction() as session:
        await OperatorService(session).create(
            OperatorCreate.model_validate(
                {"username": username, "password": ADMIN_PASSWORD, "roles": roles}
            ),
            Actor("test"),
        )


async def login(client: httpx.AsyncClient, username: str) -> dict[str, str]:
    """Sign in and return the Authorization header."""
    answer = await client.post(
        "/admin/v1/session", json={"username": username, "password": ADMIN_PASSWORD}
    )
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


@pytest.fixture
async def client(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client talking to the admin listener in-process."""
    transport = httpx.ASGITransport(app=build_admin(runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://admin.test") as http:
        yield http


@pytest.fixture
async def admin(runtime: Runtime, client: httpx.AsyncClient) -> httpx.AsyncClient:
    """The admin client signed in as an operator with the admin role."""
    await add_operator(runtime, "root", ["admin"])
    client.headers.update(await login(client, "root"))
    return client
