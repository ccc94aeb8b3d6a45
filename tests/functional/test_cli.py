"""The smaller commands: version, migrate, operator create."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
from alembic.script import ScriptDirectory

import gridgate
from gridgate.internal_auth import InternalKeys
from gridgate.operators.services import OperatorService
from gridgate.runtime import Runtime
from gridgate.settings import load_settings
from gridgate.storage.db import alembic_config
from tests.support.redis import RedisServer


def _gridgate(
    *args: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("GRIDGATE_")}
    return subprocess.run(
        [sys.executable, "-m", "gridgate", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env={**base, **(env or {})},
    )


def test_version() -> None:
    result = _gridgate("version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"gridgate {gridgate.__version__}"


def test_migrate_then_operator_create(tmp_path: Path) -> None:
    migrated = _gridgate("migrate", "--data-dir", str(tmp_path))
    assert migrated.returncode == 0, migrated.stderr
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None and f"revision {head}" in migrated.stdout
    created = _gridgate(
        "operator",
        "create",
        "--username",
        "carol",
        "--role",
        "reviewer",
        "--role",
        "auditor",
        "--password-stdin",
        "--data-dir",
        str(tmp_path),
        stdin="a-strong-reviewer-password\n",
    )
    assert created.returncode == 0, created.stderr
    assert "a-strong-reviewer-password" not in created.stdout + created.stderr

    async def check() -> None:
        runtime = Runtime.build(load_settings(data_dir=tmp_path).with_development_keys())
        try:
            async with runtime.db.transaction() as session:
                operator = await OperatorService(session).authenticate(
                    "carol", "a-strong-reviewer-password"
                )
                assert sorted(operator.roles) == ["auditor", "reviewer"]
        finally:
            await runtime.close()

    asyncio.run(check())
    again = _gridgate(
        "operator",
        "create",
        "--username",
        "carol",
        "--role",
        "admin",
        "--password-stdin",
        "--data-dir",
        str(tmp_path),
        stdin="a-strong-reviewer-password\n",
    )
    assert again.returncode == 2
    assert "already exists" in again.stderr


def test_operator_create_refuses_weak_password_without_echoing_it(tmp_path: Path) -> None:
    result = _gridgate(
        "operator",
        "create",
        "--username",
        "dave",
        "--role",
        "admin",
        "--password-stdin",
        "--data-dir",
        str(tmp_path),
        stdin="weakpw\n",
    )
    assert result.returncode == 2
    assert "password" in result.stderr
    assert "weakpw" not in result.stderr + result.stdout


def test_serve_rejects_unknown_role(tmp_path: Path) -> None:
    result = _gridgate("serve", "nonsense", "--data-dir", str(tmp_path))
    assert result.returncode == 2
    assert "unknown role" in result.stderr


def test_accounts_rotate_key(tmp_path: Path) -> None:
    first = _gridgate("accounts", "rotate-key", "--data-dir", str(tmp_path))
    second = _gridgate("accounts", "rotate-key", "--data-dir", str(tmp_path))
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    assert "new signing key" in first.stdout and first.stdout != second.stdout


def test_internal_key_is_the_one_the_platform_signs_with(tmp_path: Path) -> None:
    billing = _gridgate("internal-key", "billing", "--data-dir", str(tmp_path))
    marketing = _gridgate("internal-key", "marketing", "--data-dir", str(tmp_path))
    assert billing.returncode == marketing.returncode == 0, billing.stderr + marketing.stderr
    printed = billing.stdout.strip()
    assert printed != marketing.stdout.strip()
    secret = load_settings(data_dir=tmp_path).with_development_keys().signing_key
    key = base64.urlsafe_b64decode(printed + "=" * (-len(printed) % 4))
    assert key == InternalKeys(secret).for_service("billing")


def test_serve_logs_needs_the_shared_buffer(tmp_path: Path) -> None:
    done = _gridgate("serve", "logs", "--port", "0", "--data-dir", str(tmp_path))
    assert done.returncode == 2
    assert "GRIDGATE_REDIS_URL" in done.stderr and "Traceback" not in done.stderr


def test_serve_logs_runs_the_pipeline_alone(tmp_path: Path, redis_server: RedisServer) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDGATE_")}
    env.update(
        {
            "GRIDGATE_REDIS_URL": redis_server.url.replace("/0", "/9"),
            "GRIDGATE_LOG_LEVEL": "warning",
        }
    )
    assert _gridgate("migrate", "--data-dir", str(tmp_path), env=env).returncode == 0
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gridgate",
            "serve",
            "logs",
            "--port",
            "0",
            "--data-dir",
            str(tmp_path),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().rsplit(" ", 1)[-1].strip()
        assert url.startswith("http://127.0.0.1:")
        assert httpx.get(f"{url}/readyz", timeout=10).json()["listener"] == "logs"
    finally:
        proc.terminate()
        assert proc.wait(timeout=15) == 0


def _command_paths() -> list[list[str]]:
    """Every command and group of ``gridgate``, as the words that name it."""
    import typer.main  # noqa: PLC0415 - only this test walks the command tree

    from gridgate.cli import app  # noqa: PLC0415

    paths: list[list[str]] = []

    def walk(command: Any, path: list[str]) -> None:
        paths.append(path)
        for name, sub in getattr(command, "commands", {}).items():  # a group (typer's click)
            walk(sub, [*path, name])

    walk(typer.main.get_command(app), [])
    return paths


def test_help_texts_show_no_markup() -> None:
    paths = _command_paths()
    assert ["logs", "status"] in paths and ["migrate"] in paths
    for path in paths:
        result = _gridgate(*path, "--help", env={"COLUMNS": "200"})
        assert result.returncode == 0, (path, result.stderr)
        assert "Usage:" in result.stdout
        shown = [line for line in result.stdout.splitlines() if "`" in line]
        assert shown == [], (path, shown)


def test_serve_help_names_every_role() -> None:
    # The help spells the roles out (main.py imports no role list, to stay light): kept whole.
    from gridgate.cli.serving import ROLE_NAMES  # noqa: PLC0415

    result = _gridgate("serve", "--help", env={"COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    words = set(result.stdout.replace("│", " ").replace(",", " ").replace("(", " ").split())
    words |= {word.rstrip(").") for word in words}
    assert [role for role in ROLE_NAMES if role not in words] == []
