"""``gridgate bench accounts``: sign-ins and refreshes per core, account look-ups at 1M accounts.

Measured at the service layer (``AccountService``, built by ``AccountsParts.build``) on a real
database; the HTTP layer (uvicorn, the accounts routes, the gateway in front) is not included.

- A throwaway PostgreSQL server, started from the installed binaries like the tests do (as the
  ``postgres`` user when run as root), pinned to core 1 with everything else.
- ``accounts`` accounts (default 1,000,000) and as many 户号 bindings seeded straight into it:
  rows made in Python with the real :class:`SecretBox` (phone sealed + keyed look-up hash, as
  ``AccountService.register`` does) and one argon2id hash of a known password made once with the
  configured hasher (so verifying it costs what any customer's does), bulk-loaded with asyncpg's
  COPY into the migrated schema, then ``ANALYZE``.
- Each measurement in a fresh worker process (``python -m gridgate.bench.accounts worker``)
  pinned to core 0: password sign-ins (``authenticate`` + ``start_session`` + commit, one
  transaction each, random seeded accounts), refresh-token rotations (``refresh`` + commit, each
  task rotating its own chain), with a warm-up first; then look-ups one at a time:
  ``AccountService.by_phone`` and the back-office "accounts of a 户号" query.
- Optionally the same sign-ins and refreshes on SQLite (a small seeded file; SQLite runs in the
  worker's process, so there the whole database is inside the measured core).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from gridgate.bench.registry import (
    LOAD_CORE,
    NODE_CORE,
    BenchReport,
    Row,
    _first_line,
    _free_port,
    _percentile,
    machine_info,
)

__all__ = ["run_accounts_bench"]

#: Keycloak's sizing guide, per vCPU.
KEYCLOAK_LOGINS_PER_S = 15.0
KEYCLOAK_REFRESHES_PER_S = 120.0
_TARGET_REFRESH = 10 * KEYCLOAK_REFRESHES_PER_S
_TARGET_P99_MS = 5.0
PASSWORD = "bench-Password-2026"  # noqa: S105 - the seeded accounts' known password
CHANNEL = "bench"
_CHUNK = 50_000
_LOGIN_TASKS = 4  # the hash runs on the event loop: more tasks only queue behind it
_WARMUP_S = 2.0
_LOOKUP_WARMUP = 500
_ACCOUNT_COLUMNS = [
    "id",
    "phone_hash",
    "phone_sealed",
    "password_hash",
    "status",
    "level",
    "attributes",
    "failed_logins",
    "created_at",
    "updated_at",
]
_BINDING_COLUMNS = ["account_id", "customer_no", "supply_region", "meter_book", "bound_at"]


def _phone(index: int) -> str:
    return f"13{index:09d}"


def _customer_no(index: int) -> str:
    return f"{5_000_000_000 + index:010d}"


def _account_id(index: int) -> str:
    return f"bench{index:027d}"


# -- PostgreSQL ------------------------------------------------------------------------------


def _pg_bindir() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), reverse=True)
    if found:
        return found[0].parent
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl:
        return Path(pg_ctl).resolve().parent
    raise RuntimeError("PostgreSQL server binaries not found: `make servers` installs them")


@dataclass(slots=True)
class _Postgres:
    """A throwaway server (``fsync=off``) pinned to the load core; superuser without password."""

    port: int
    root: Path
    bindir: Path
    runas: list[str]
    pin: list[str]

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def pid(self) -> int:
        return int((self.root / "data" / "postmaster.pid").read_text().split()[0])

    @classmethod
    def start(cls, pin: bool) -> _Postgres:
        bindir = _pg_bindir()
        root = Path(tempfile.mkdtemp(prefix="gridgate-bench-pg-"))
        runas: list[str] = []
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            user = pwd.getpwnam("postgres")
            os.chown(root, user.pw_uid, user.pw_gid)
            runas = ["runuser", "-u", "postgres", "--"]
        server = cls(_free_port(), root, bindir, runas, ["taskset", "-c", str(LOAD_CORE)] * pin)
        data = root / "data"
        try:
            server._run(
                str(bindir / "initdb"),
                *("-D", str(data), "-U", "postgres", "--auth=trust", "--encoding=UTF8"),
                *("--no-sync", "--no-instructions"),
            )
            options = (
                f"-p {server.port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200 "
                "-c shared_buffers=512MB -c maintenance_work_mem=256MB"
            )
            server._run(
                str(bindir / "pg_ctl"),
                *("-D", str(data), "-o", options, "-l", str(root / "server.log")),
                *("-w", "-t", "60", "start"),
            )
        except subprocess.CalledProcessError as exc:
            log = root / "server.log"
            said = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            server.stop()
            raise RuntimeError(f"PostgreSQL did not start: {exc.stderr!r}\n{said}") from exc
        return server

    def _run(self, *argv: str, check: bool = True) -> None:
        subprocess.run(  # noqa: S603 - the installed PostgreSQL binaries
            [*self.pin, *self.runas, *argv], check=check, capture_output=True
        )

    def version(self) -> str:
        return _first_line([str(self.bindir / "postgres"), "--version"])

    def stop(self) -> None:
        data = str(self.root / "data")
        if (self.root / "data" / "postmaster.pid").exists():
            self._run(
                str(self.bindir / "pg_ctl"),
                "-D",
                data,
                "-m",
                "immediate",
                "-w",
                "stop",
                check=False,
            )
        shutil.rmtree(self.root, ignore_errors=True)


def _tree_cpu(pid: int) -> float:
    """CPU seconds of a process and its direct children (a postmaster and its backends)."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry.name) == pid or int(fields[1]) == pid:
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


# -- seeding ---------------------------------------------------------------------------------


def _account_rows(
    box: Any, password_hash: str, start: int, count: int, base: datetime
) -> list[tuple[Any, ...]]:
    from gridgate.accounts.services import PHONE  # noqa: PLC0415 - heavy imports

    rows = []
    for index in range(start, start + count):
        phone = _phone(index)
        created = base + timedelta(seconds=index * 30)
        rows.append(
            (
                _account_id(index),
                box.lookup_hash(phone, PHONE),
                box.seal(phone, PHONE),
                password_hash,
                "active",
                1,
                "{}",
                0,
                created,
                created,
            )
        )
    return rows


def _binding_rows(start: int, count: int, base: datetime) -> list[tuple[Any, ...]]:
    return [
        (
            _account_id(index),
            _customer_no(index),
            f"浙江省/杭州市/区{index % 40:02d}",
            f"MB{index % 20_000:05d}",
            base + timedelta(seconds=index * 30 + 60),
        )
        for index in range(start, start + count)
    ]


async def _seed(
    database_url: str,
    dsn: str | None,
    data_dir: Path,
    count: int,
    *,
    bindings: bool,
    label: str,
) -> float:
    """Migrate, then load ``count`` accounts (and bindings); seconds taken."""
    import asyncpg  # type: ignore[import-untyped]  # noqa: PLC0415
    from rich.console import Console  # noqa: PLC0415
    from rich.progress import (  # noqa: PLC0415
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )
    from sqlalchemy import insert  # noqa: PLC0415

    from gridgate.accounts.models import Account  # noqa: PLC0415
    from gridgate.passwords import hash_password  # noqa: PLC0415
    from gridgate.settings import load_settings  # noqa: PLC0415
    from gridgate.storage.crypto import SecretBox  # noqa: PLC0415
    from gridgate.storage.db import Database  # noqa: PLC0415

    settings = load_settings(
        data_dir=data_dir, database_url=database_url, env="development"
    ).with_development_keys()
    box = SecretBox(settings.data_keys, lookup_key=settings.lookup_key_bytes)
    fixed_hash = hash_password(PASSWORD)  # once: the configured cost, any row verifies with it
    base = datetime(2024, 1, 1, tzinfo=UTC)
    started = time.monotonic()
    db = Database(database_url)
    try:
        await db.migrate()
        progress = Progress(
            TextColumn(f"[dim]… seeding {label}[/] {{task.description}}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True),
        )
        with progress:
            accounts = progress.add_task("accounts", total=count)
            linked = progress.add_task("bindings", total=count if bindings else 0)
            if dsn is None:  # SQLite: plain executemany, small counts
                async with db.engine.begin() as conn:
                    for start in range(0, count, _CHUNK):
                        rows = _account_rows(
                            box, fixed_hash, start, min(_CHUNK, count - start), base
                        )
                        values = [dict(zip(_ACCOUNT_COLUMNS, row, strict=True)) for row in rows]
                        for value in values:
                            value["attributes"] = {}
                        await conn.execute(insert(Account), values)
                        progress.advance(accounts, len(rows))
            else:
                conn = await asyncpg.connect(dsn)
                try:
                    for start in range(0, count, _CHUNK):
                        rows = _account_rows(
                            box, fixed_hash, start, min(_CHUNK, count - start), base
                        )
                        await conn.copy_records_to_table(
                            "accounts", records=rows, columns=_ACCOUNT_COLUMNS
                        )
                        progress.advance(accounts, len(rows))
                    for start in range(0, count if bindings else 0, _CHUNK):
                        rows = _binding_rows(start, min(_CHUNK, count - start), base)
                        await conn.copy_records_to_table(
                            "bindings", records=rows, columns=_BINDING_COLUMNS
                        )
                        progress.advance(linked, len(rows))
                    await conn.execute("ANALYZE accounts")
                    await conn.execute("ANALYZE bindings")
                finally:
                    await conn.close()
    finally:
        await db.dispose()
    return time.monotonic() - started


# -- the worker (``python -m gridgate.bench.accounts worker CONFIG``, pinned to core 0) -------


async def _worker(config: dict[str, Any]) -> dict[str, Any]:
    from gridgate.accounts.parts import AccountsParts  # noqa: PLC0415 - heavy imports
    from gridgate.accounts.tokens import TokenClaims  # noqa: PLC0415
    from gridgate.runtime import Runtime  # noqa: PLC0415
    from gridgate.settings import load_settings  # noqa: PLC0415

    settings = load_settings(
        data_dir=Path(config["data_dir"]), database_url=config["database_url"], env="development"
    ).with_development_keys()
    runtime = Runtime.build(settings)
    parts = AccountsParts.build(runtime)
    try:
        # The first signing key, created before the clock runs (and before tasks race for it).
        async with runtime.db.transaction() as session:
            await parts.keys.issue(session, TokenClaims("warm-up", 0, CHANNEL, "warm-up"))
        if config["mode"] == "lookup":
            return await _lookups(parts, config)
        return await _throughput(parts, config)
    finally:
        await parts.attempts.close()
        await parts.store.close()
        await runtime.close()


async def _throughput(parts: Any, config: dict[str, Any]) -> dict[str, Any]:
    """Operations/s of ``mode`` with ``tasks`` concurrent tasks, after a warm-up."""
    mode: str = config["mode"]
    accounts: int = config["accounts"]
    db = parts.runtime.db
    rng = random.Random()  # noqa: S311 - picks accounts, not secrets

    async def new_token() -> str:
        async with db.sessions() as session:
            service = parts.accounts(session)
            account = await service.by_phone(_phone(rng.randrange(accounts)))
            pair = await service.start_session(account, CHANNEL)
            await session.commit()
            token: str = pair.refresh_token
            return token

    async def login(_token: str) -> str:
        async with db.sessions() as session:
            service = parts.accounts(session)
            account = await service.authenticate(_phone(rng.randrange(accounts)), PASSWORD)
            await service.start_session(account, CHANNEL)
            await session.commit()
        return ""

    async def refresh(token: str) -> str:
        async with db.sessions() as session:
            pair = await parts.accounts(session).refresh(token, channel=CHANNEL)
            await session.commit()
        rotated: str = pair.refresh_token
        return rotated

    operation: Callable[[str], Awaitable[str]] = login if mode == "login" else refresh
    tokens = [await new_token() if mode == "refresh" else "" for _ in range(int(config["tasks"]))]
    recover = new_token if mode == "refresh" else None
    return await _drive(operation, recover, tokens, config)


async def _drive(
    operation: Callable[[str], Awaitable[str]],
    recover: Callable[[], Awaitable[str]] | None,
    tokens: list[str],
    config: dict[str, Any],
) -> dict[str, Any]:
    """One task per token, each running ``operation`` in a loop; timed after the warm-up."""
    phase = "warm-up"
    latencies: list[float] = []
    errors: list[str] = []

    async def task(token: str) -> None:
        while phase != "stop":
            started = time.perf_counter()
            try:
                token = await operation(token)
            except Exception as exc:  # counted and reported
                said = (str(exc).splitlines() or [""])[0].replace("|", "/")
                errors.append(f"{type(exc).__name__}: {said}"[:160])
                token = await recover() if recover is not None else token
                continue
            if phase == "measure":
                latencies.append(time.perf_counter() - started)

    running = [asyncio.create_task(task(token)) for token in tokens]
    await asyncio.sleep(float(config["warmup_s"]))
    pg_pid: int | None = config.get("pg_pid")
    db_cpu = _tree_cpu(pg_pid) if pg_pid else 0.0
    cpu, started = time.process_time(), time.monotonic()
    errors.clear()
    phase = "measure"
    await asyncio.sleep(float(config["duration_s"]))
    phase = "stop"
    seconds = time.monotonic() - started
    cpu = (time.process_time() - cpu) / seconds
    db_share = (_tree_cpu(pg_pid) - db_cpu) / seconds if pg_pid else None
    await asyncio.gather(*running)
    ms = [value * 1000 for value in latencies]
    return {
        "ops": len(latencies),
        "seconds": seconds,
        "errors": len(errors),
        "first_error": errors[0] if errors else "",
        "p50_ms": _percentile(ms, 50) if ms else 0.0,
        "p99_ms": _percentile(ms, 99) if ms else 0.0,
        "cpu": cpu,
        "db_cpu": db_share,
    }


async def _lookups(parts: Any, config: dict[str, Any]) -> dict[str, Any]:
    """Look-ups one at a time, each in its own session as a request would: by phone, by 户号."""
    from sqlalchemy import select  # noqa: PLC0415

    from gridgate.accounts.models import Account, Binding  # noqa: PLC0415

    accounts: int = config["accounts"]
    count: int = config["lookups"]
    db = parts.runtime.db
    rng = random.Random()  # noqa: S311 - picks accounts, not secrets

    async def by_phone(index: int) -> bool:
        async with db.sessions() as session:
            return await parts.accounts(session).by_phone(_phone(index)) is not None

    async def by_customer(index: int) -> bool:
        # The back-office search's shape: accounts whose bindings hold the 户号.
        holders = select(Binding.account_id).where(Binding.customer_no == _customer_no(index))
        async with db.sessions() as session:
            found = await session.scalars(select(Account).where(Account.id.in_(holders)))
            return bool(found.all())

    results: dict[str, Any] = {}
    for name, look in (("phone", by_phone), ("customer_no", by_customer)):
        for _ in range(_LOOKUP_WARMUP):
            await look(rng.randrange(accounts))
        ms: list[float] = []
        misses = 0
        started = time.monotonic()
        for _ in range(count):
            index = rng.randrange(accounts)
            before = time.perf_counter()
            found = await look(index)
            ms.append((time.perf_counter() - before) * 1000)
            misses += not found
        results[name] = {
            "n": count,
            "misses": misses,
            "p50_ms": _percentile(ms, 50),
            "p99_ms": _percentile(ms, 99),
            "max_ms": max(ms),
            "rate": count / (time.monotonic() - started),
        }
    return results


def _run_worker(config: dict[str, Any], pin: bool, timeout_s: float) -> dict[str, Any]:
    argv = [sys.executable, "-m", "gridgate.bench.accounts", "worker", json.dumps(config)]
    if pin:
        argv = ["taskset", "-c", str(NODE_CORE), *argv]
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDGATE_")}
    done = subprocess.run(  # noqa: S603 - our own interpreter and module
        argv, capture_output=True, text=True, check=False, timeout=timeout_s, env=env
    )
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("BENCH ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"the {config['mode']} worker failed:\n{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(line.removeprefix("BENCH "))
    return result


# -- the benchmark ---------------------------------------------------------------------------


@contextlib.contextmanager
def _workspace() -> Iterator[tuple[Path, bool, list[_Postgres]]]:
    pin = shutil.which("taskset") is not None and len(os.sched_getaffinity(0)) >= 2
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    work = Path(tempfile.mkdtemp(prefix="gridgate-bench-"))
    servers: list[_Postgres] = []
    try:
        yield work, pin, servers
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def _argon2_cost() -> str:
    from gridgate.passwords import _HASHER  # noqa: PLC0415

    return (
        f"argon2id t={_HASHER.time_cost}, m={_HASHER.memory_cost // 1024} MiB, "
        f"p={_HASHER.parallelism}"
    )


def _rate_rows(db_name: str, login: dict[str, Any], refresh: dict[str, Any]) -> list[Row]:
    def detail(run: dict[str, Any], tasks: int) -> str:
        db_cpu = run["db_cpu"]
        where = f", {db_name} CPU {db_cpu:.0%} (other core)" if db_cpu is not None else ""
        errors = f", {run['errors']} errors ({run['first_error']})" if run["errors"] else ""
        busy = run["cpu"] * run["seconds"]
        per_cpu_s = f" = {run['ops'] / busy:,.1f} per worker CPU-second" if busy else ""
        return (
            f"{tasks} tasks: p50 {run['p50_ms']:.1f} ms, p99 {run['p99_ms']:.1f} ms, "
            f"worker CPU {run['cpu']:.0%}{per_cpu_s}{where}{errors}"
        )

    logins = login["ops"] / login["seconds"]
    refreshes = refresh["ops"] / refresh["seconds"]
    return [
        Row(
            f"password logins/s per core ({db_name})",
            f"{logins:,.1f}",
            f"{_argon2_cost()}; " + detail(login, login["tasks"]),
        ),
        Row(
            f"logins vs Keycloak ({db_name})",
            f"{logins / KEYCLOAK_LOGINS_PER_S:.2f}×",
            f"Keycloak sizing: {KEYCLOAK_LOGINS_PER_S:g} password logins/s per vCPU",
        ),
        Row(
            f"refreshes/s per core ({db_name})",
            f"{refreshes:,.0f}",
            detail(refresh, refresh["tasks"]),
            f"≥ {_TARGET_REFRESH:,.0f}",
            refreshes >= _TARGET_REFRESH and not refresh["errors"],
        ),
        Row(
            f"refreshes vs Keycloak ({db_name})",
            f"{refreshes / KEYCLOAK_REFRESHES_PER_S:.1f}×",
            f"Keycloak sizing: {KEYCLOAK_REFRESHES_PER_S:g} refreshes/s per vCPU",
            "≥ 10×",
            refreshes >= _TARGET_REFRESH and not refresh["errors"],
        ),
    ]


def _lookup_row(metric: str, found: dict[str, Any], what: str, accounts: int) -> Row:
    misses = f", {found['misses']} not found" if found["misses"] else ""
    return Row(
        metric,
        f"{found['p99_ms']:.2f} ms",
        f"p50 {found['p50_ms']:.2f} ms, max {found['max_ms']:.1f} ms; {found['n']:,} random "
        f"look-ups one at a time ({found['rate']:,.0f}/s), {what}, {accounts:,} accounts{misses}",
        f"p99 ≤ {_TARGET_P99_MS:g} ms",
        found["p99_ms"] <= _TARGET_P99_MS and not found["misses"],
    )


def run_accounts_bench(
    *,
    duration: int = 10,
    accounts: int = 1_000_000,
    lookups: int = 10_000,
    concurrency: int = 16,
    sqlite: bool = True,
    sqlite_accounts: int = 10_000,
    command: str = "gridgate bench accounts",
    progress: Callable[[str], None] | None = None,
) -> BenchReport:
    """Seed, run every phase and return the figures; every process and file is gone afterwards."""
    say = progress or (lambda _message: None)
    report = BenchReport(command, machine_info())
    for name in ("Redis", "wrk"):
        report.machine.pop(name, None)
    report.machine["password hash"] = _argon2_cost()
    timeout_s = duration + _WARMUP_S + 300
    load = "load average at start {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    with _workspace() as (work, pin, servers):
        if not pin:
            report.machine["note"] = "not pinned (taskset missing or fewer than 2 cores)"
        data_dir = work / "data"
        say(f"PostgreSQL on core {LOAD_CORE}")
        server = _Postgres.start(pin)
        servers.append(server)
        report.machine["PostgreSQL"] = server.version() + " (fsync=off, synchronous_commit=off)"
        seconds = asyncio.run(
            _seed(server.url, server.dsn, data_dir, accounts, bindings=True, label="PostgreSQL")
        )
        report.rows.append(
            Row(
                "seeding (PostgreSQL)",
                f"{seconds:.0f} s",
                f"{accounts:,} accounts + {accounts:,} bindings: sealed phone + keyed hash "
                "per row, COPY into the migrated schema (indexes in place), ANALYZE",
            )
        )
        base = {"data_dir": str(data_dir), "accounts": accounts, "warmup_s": _WARMUP_S}
        pg = {**base, "database_url": server.url, "pg_pid": server.pid, "duration_s": duration}
        say(f"PostgreSQL: password logins, {_WARMUP_S:g} + {duration} s on core {NODE_CORE}")
        login = _run_worker({**pg, "mode": "login", "tasks": _LOGIN_TASKS}, pin, timeout_s)
        say(f"PostgreSQL: refreshes, {_WARMUP_S:g} + {duration} s on core {NODE_CORE}")
        refresh = _run_worker({**pg, "mode": "refresh", "tasks": concurrency}, pin, timeout_s)
        login["tasks"], refresh["tasks"] = _LOGIN_TASKS, concurrency
        report.rows += _rate_rows("PostgreSQL", login, refresh)
        say(f"PostgreSQL: {lookups:,} look-ups by phone and by 户号")
        found = _run_worker({**pg, "mode": "lookup", "lookups": lookups}, pin, timeout_s)
        report.rows.append(
            _lookup_row(
                "look-up by phone p99 (PostgreSQL)",
                found["phone"],
                "AccountService.by_phone (keyed hash → uq_accounts_phone_hash)",
                accounts,
            )
        )
        report.rows.append(
            _lookup_row(
                "look-up by 户号 p99 (PostgreSQL)",
                found["customer_no"],
                "accounts WHERE id IN (bindings by customer_no → ix_bindings_customer_no)",
                accounts,
            )
        )
        server.stop()
        servers.clear()
        if sqlite:
            url = f"sqlite+aiosqlite:///{work / 'sqlite.db'}"
            asyncio.run(_seed(url, None, data_dir, sqlite_accounts, bindings=False, label="SQLite"))
            lite = {**base, "accounts": sqlite_accounts, "database_url": url}
            lite["duration_s"] = duration
            say(f"SQLite: password logins and refreshes, {_WARMUP_S:g} + {duration} s each")
            login = _run_worker({**lite, "mode": "login", "tasks": _LOGIN_TASKS}, pin, timeout_s)
            refresh = _run_worker({**lite, "mode": "refresh", "tasks": concurrency}, pin, timeout_s)
            login["tasks"], refresh["tasks"] = _LOGIN_TASKS, concurrency
            report.rows += _rate_rows(f"SQLite, {sqlite_accounts:,} accounts", login, refresh)
        say("stopping")
    report.machine["load"] = load + ", at end {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    return report


if __name__ == "__main__" and sys.argv[1:2] == ["worker"]:
    import uvloop  # the worker runs on the loop the services run on

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as _runner:
        _result = _runner.run(_worker(json.loads(sys.argv[2])))
    sys.stdout.write("BENCH " + json.dumps(_result) + "\n")
