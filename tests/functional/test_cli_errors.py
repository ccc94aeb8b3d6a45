"""What a user who gets the command line wrong sees: one ``error:`` line, never a traceback.

Exit code 2 for what the command line or the configuration says wrong, 1 for what the
machine refuses (the database unreachable); docs/configuration.md "Exit codes".
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

#: Modules `gridgate version` must not import: the web stack, the database, Parquet.
HEAVY = ("fastapi", "sqlalchemy", "pyarrow", "uvicorn", "pydantic_settings", "gridgate.app")


def _gridgate(
    *args: str, env: dict[str, str] | None = None, python: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("GRIDGATE_")}
    return subprocess.run(
        [sys.executable, *python, "-m", "gridgate", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**base, **(env or {})},
        stdin=subprocess.DEVNULL,
    )


def _one_error_line(result: subprocess.CompletedProcess[str], code: int) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == code, result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.fixture
def configs(tmp_path: Path) -> dict[str, Path]:
    made = {
        "invalid TOML": tmp_path / "broken.toml",
        "binary": tmp_path / "binary.toml",
        "directory": tmp_path / "a-directory.toml",
        "missing": tmp_path / "missing.toml",
        "unknown setting": tmp_path / "unknown.toml",
        "ill-typed setting": tmp_path / "typed.toml",
    }
    made["invalid TOML"].write_text('gateway_port = 8080\nlog_level = "info\n')
    made["binary"].write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe" + bytes(range(256)))
    made["directory"].mkdir()
    made["unknown setting"].write_text("gateway_prot = 8080\n")
    made["ill-typed setting"].write_text('gateway_port = "eighty"\n')
    return made


@pytest.mark.parametrize(
    ("kind", "says"),
    [
        ("invalid TOML", "is not valid TOML"),
        ("binary", "is not UTF-8 text"),
        ("directory", "is a directory"),
        ("missing", "does not exist"),
        ("unknown setting", "gateway_prot: unknown setting"),
        ("ill-typed setting", "gateway_port:"),
    ],
)
def test_a_bad_config_file_is_one_error_line(
    configs: dict[str, Path], tmp_path: Path, kind: str, says: str
) -> None:
    result = _gridgate("migrate", "--config", str(configs[kind]), "--data-dir", str(tmp_path))
    assert says in _one_error_line(result, 2)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file whatever its mode")
def test_an_unreadable_config_file_is_one_error_line(tmp_path: Path) -> None:
    path = tmp_path / "secret.toml"
    path.write_text('log_level = "info"\n')
    path.chmod(0)
    result = _gridgate("migrate", "--config", str(path), "--data-dir", str(tmp_path))
    assert "cannot read configuration file" in _one_error_line(result, 2)


def test_a_config_path_through_a_file_is_one_error_line(tmp_path: Path) -> None:
    # Unreadable for root too (the test above is skipped as root): its parent is no directory.
    parent = tmp_path / "a-file"
    parent.write_text("")
    result = _gridgate("migrate", "--config", str(parent / "x.toml"), "--data-dir", str(tmp_path))
    assert "cannot read configuration file" in _one_error_line(result, 2)


def test_a_config_fifo_is_one_error_line(tmp_path: Path) -> None:
    # Read, it would block for ever.
    fifo = tmp_path / "config.toml"
    os.mkfifo(fifo)
    result = _gridgate("migrate", "--config", str(fifo), "--data-dir", str(tmp_path))
    assert "is not a regular file" in _one_error_line(result, 2)


@pytest.mark.parametrize(
    "command",
    [
        ("up",),
        ("serve", "gateway"),
        ("internal-key", "billing"),
        ("logs", "status"),
        ("accounts", "rotate-key"),
        ("operator", "create", "--username", "eve", "--role", "admin", "--password-stdin"),
    ],
)
def test_every_command_with_config_fails_the_same_way(
    configs: dict[str, Path], tmp_path: Path, command: tuple[str, ...]
) -> None:
    broken = str(configs["invalid TOML"])
    result = _gridgate(*command, "--config", broken, "--data-dir", str(tmp_path))
    assert "is not valid TOML" in _one_error_line(result, 2)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("serve", "gateway", "--port", "eighty"), "--port"),
        (("up", "--log-level", "loud"), "--log-level"),
        (("up", "--log-format", "xml"), "--log-format"),
        (("up", "--no-such-option"), "--no-such-option"),
        (("no-such-command",), "no-such-command"),
        (("serve",), "role"),
    ],
)
def test_a_bad_option_is_one_error_line(args: tuple[str, ...], says: str) -> None:
    assert says in _one_error_line(_gridgate(*args), 2)


def test_a_bad_setting_in_the_environment_is_one_error_line(tmp_path: Path) -> None:
    result = _gridgate(
        "migrate", "--data-dir", str(tmp_path), env={"GRIDGATE_DATABASE_URL": "mysql://db/x"}
    )
    assert "database_url" in _one_error_line(result, 2)


def test_an_unreachable_database_is_one_error_line_without_the_password(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"postgresql+asyncpg://gridgate:s3cr3t-db-pass@127.0.0.1:{port}/gridgate"
    result = _gridgate("migrate", "--data-dir", str(tmp_path), env={"GRIDGATE_DATABASE_URL": url})
    line = _one_error_line(result, 1)
    assert "cannot reach the database" in line and f"127.0.0.1:{port}" in line
    assert "s3cr3t-db-pass" not in result.stderr + result.stdout


def test_a_data_dir_that_is_a_file_is_one_error_line(tmp_path: Path) -> None:
    taken = tmp_path / "not-a-dir"
    taken.write_text("")
    assert "data directory" in _one_error_line(_gridgate("migrate", "--data-dir", str(taken)), 2)


def test_version_imports_no_web_stack() -> None:
    result = _gridgate("version", python=("-X", "importtime"))
    assert result.returncode == 0
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()}
    assert imported, result.stderr
    assert not [name for name in HEAVY if name in imported]
