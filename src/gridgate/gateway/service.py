"""Assembles the gateway of one process: what feeds the engine (snapshot, discovery, keys) and
the access log's pipeline.

The Rust engine serves the request path (:mod:`gridgate.gateway.plane`); with
``GRIDGATE_REDIS_URL`` it shares nonces, rate limits and session revocations with every
gateway node through Redis itself, without it they live in the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from gridgate.gateway.snapshot import Snapshot, SnapshotHolder
from gridgate.gateway.tokens import (
    JwksFetcher,
    JwksVerifier,
    MemoryRevocationList,
    TokenVerifier,
)
from gridgate.logs.service import LogParts, spool_directory
from gridgate.registry.client import Discovery, RegistryClient, RegistryUnavailable
from gridgate.runtime import Runtime

__all__ = ["GatewayParts", "Job"]

_log = structlog.get_logger("gridgate.gateway")
Job = Callable[[asyncio.Event], Coroutine[Any, Any, None]]
_RETRY_S = 1.0


@dataclass
class GatewayParts:
    """Everything one gateway process holds, and the background jobs that keep it fresh."""

    runtime: Runtime
    holder: SnapshotHolder
    logs: LogParts
    verifier: TokenVerifier | None
    revocations: MemoryRevocationList
    discovery: Discovery | None = None

    @classmethod
    def build(
        cls,
        runtime: Runtime,
        *,
        verifier: TokenVerifier | None = None,
        revocations: MemoryRevocationList | None = None,
    ) -> GatewayParts:
        """Wire the parts the settings name; ``verifier`` overrides the JWKS verifier (and
        ``revocations`` is then the list it consults)."""
        settings = runtime.settings
        revocations = revocations or runtime.revocations
        if verifier is None:
            # Keys arrive from the accounts service's JWKS once a fetcher runs (see jobs).
            verifier = JwksVerifier(
                settings.token_issuer,
                settings.token_audience,
                revoked=revocations,
                max_lifetime_s=settings.token_max_lifetime_s,
            )
        return cls(
            runtime=runtime,
            holder=SnapshotHolder(runtime.db, runtime.box),
            # The engine appends the access records itself (spool or stream).
            logs=LogParts.build(runtime, engine_writes=True),
            verifier=verifier,
            revocations=revocations,
        )

    @property
    def spool_directory(self) -> Path:
        """Where the engine appends access records when there is no Redis."""
        return spool_directory(self.runtime)

    def jobs(
        self,
        registry_urls: list[str],
        *,
        jwks_url: str | None = None,
        log_pipeline: bool | None = None,
    ) -> list[Job]:
        """Background jobs: catalog snapshot, discovery, access log, key and revocation feeds.

        The access log always goes to the log buffer. Batching it into Parquet and analysing
        it (``log_pipeline``) is this process's job only where the buffer is its own spool; a
        shared buffer (Redis) is batched and analysed by ``gridgate serve logs`` in the intranet,
        once, instead of by every gateway node on the cores that answer channels.
        """
        pipeline = not self.logs.shared if log_pipeline is None else log_pipeline
        jobs: list[Job] = [
            self._run_dispatch(registry_urls),
            self.holder.run,
            # The engine appends the access records itself (spool or stream).
            *self.logs.jobs(append=False, pipeline=pipeline),
        ]
        settings = self.runtime.settings
        jwks_url = settings.accounts_jwks_url or jwks_url
        if isinstance(self.verifier, JwksVerifier) and jwks_url:
            jobs.append(JwksFetcher(jwks_url, self.verifier).run)
        # Revocations: the engine follows the Redis feed itself.
        return jobs

    def _run_dispatch(self, registry_urls: list[str]) -> Job:
        async def run(stopping: asyncio.Event) -> None:
            token = self.runtime.settings.registry_token
            client = RegistryClient(
                registry_urls, token=token.get_secret_value() if token else None
            )
            discovery = Discovery(
                client,
                services=self.holder.current.services,
                snapshot_path=self.runtime.settings.data_dir / "gateway-registry.json",
            )

            async def follow(snapshot: Snapshot) -> None:
                with contextlib.suppress(RegistryUnavailable):
                    await discovery.follow(snapshot.services)

            try:
                # The registry may start in this very process, or later: keep trying.
                while not stopping.is_set():
                    try:
                        await discovery.follow(self.holder.current.services)
                        await discovery.start()
                        break
                    except RegistryUnavailable as exc:
                        _log.warning("gateway_waiting_for_registry", error=str(exc))
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(stopping.wait(), timeout=_RETRY_S)
                self.holder.on_change(follow)
                self.discovery = discovery
                await stopping.wait()
            finally:
                await discovery.stop()
                await client.aclose()

        return run
