"""Assembles the gateway of one process: snapshot, stages, flow control, dispatch, log.

Stores follow the settings: with ``GRIDGATE_REDIS_URL`` nonces, rate limits and session
revocations are shared by every gateway node; without it they live in the process.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from redis.asyncio import Redis
from starlette.types import ASGIApp

from gridgate.gateway.accesslog import AccessLogSink
from gridgate.gateway.app import GatewayApp
from gridgate.gateway.flow import ConcurrencyGate, Gates, RateLimiter, limits_uri
from gridgate.gateway.nonces import MemoryNonceStore, NonceStore, RedisNonceStore
from gridgate.gateway.snapshot import Snapshot, SnapshotHolder
from gridgate.gateway.stages import (
    ChannelAuth,
    DataScope,
    Permission,
    RateLimit,
    Route,
    Stage,
    UserAuth,
)
from gridgate.gateway.tokens import (
    JwksFetcher,
    JwksVerifier,
    MemoryRevocationList,
    RedisRevocationFeed,
    TokenVerifier,
)
from gridgate.gateway.upstream import Dispatcher
from gridgate.internal_auth import InternalSigner
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
    nonces: NonceStore
    limiter: RateLimiter
    gates: Gates
    dispatcher: Dispatcher
    sink: AccessLogSink
    logs: LogParts
    verifier: TokenVerifier | None
    revocations: MemoryRevocationList
    stages: list[Stage] = field(default_factory=list)
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
        nonces: NonceStore
        if settings.redis_url:
            nonces = RedisNonceStore.from_url(settings.redis_url)
            limiter = RateLimiter(limits_uri(settings.redis_url))
        else:
            nonces = MemoryNonceStore(settings.gateway_max_nonces)
            limiter = RateLimiter("memory://")
        revocations = revocations or runtime.revocations
        if verifier is None:
            # Keys arrive from the accounts service's JWKS once a fetcher runs (see jobs).
            verifier = JwksVerifier(
                settings.token_issuer,
                settings.token_audience,
                revoked=revocations,
                max_lifetime_s=settings.token_max_lifetime_s,
            )
        gates = Gates(
            ConcurrencyGate(
                settings.gateway_max_concurrency,
                max_queue=settings.gateway_max_queue,
                max_wait_s=settings.gateway_max_wait_ms / 1000,
            )
        )
        logs = LogParts.build(runtime, engine_writes=settings.gateway_data_plane == "engine")
        parts = cls(
            runtime=runtime,
            holder=SnapshotHolder(runtime.db, runtime.box),
            nonces=nonces,
            limiter=limiter,
            gates=gates,
            dispatcher=Dispatcher(),
            sink=logs.sink,
            logs=logs,
            verifier=verifier,
            revocations=revocations,
        )
        parts.stages = [
            Route(),
            ChannelAuth(nonces),
            UserAuth(verifier),
            Permission(),
            DataScope(),
            RateLimit(
                limiter,
                client_default=settings.gateway_client_rate_limit_per_s,
                account_default=settings.gateway_account_rate_limit_per_s,
            ),
        ]
        return parts

    @property
    def engine(self) -> bool:
        """Whether the Rust engine serves the request path (settings ``gateway_data_plane``)."""
        return self.runtime.settings.gateway_data_plane == "engine"

    @property
    def spool_directory(self) -> Path:
        """Where the engine appends access records when there is no Redis."""
        return spool_directory(self.runtime)

    def app(self, probes: ASGIApp) -> GatewayApp:
        """The gateway ASGI app (``probes`` answers /healthz, /readyz, /metrics)."""
        return GatewayApp(
            holder=self.holder,
            stages=self.stages,
            gates=self.gates,
            dispatcher=self.dispatcher,
            sink=self.sink,
            probes=probes,
            max_body_bytes=self.runtime.settings.gateway_max_body_bytes,
            internal_signer=InternalSigner(self.runtime.internal_keys),
            trusted_proxies=self.runtime.settings.gateway_trusted_proxies,
        )

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
            *self.logs.jobs(append=not self.engine, pipeline=pipeline),
        ]
        settings = self.runtime.settings
        jwks_url = settings.accounts_jwks_url or jwks_url
        if isinstance(self.verifier, JwksVerifier) and jwks_url:
            jobs.append(JwksFetcher(jwks_url, self.verifier).run)
        if settings.redis_url and not self.engine:  # the engine follows the feed itself
            jobs.append(self._run_revocations(settings.redis_url))
        return jobs

    def _run_revocations(self, redis_url: str) -> Job:
        async def run(stopping: asyncio.Event) -> None:
            redis = Redis.from_url(redis_url)
            try:
                await RedisRevocationFeed(redis, self.revocations).run(stopping)
            finally:
                await redis.aclose()

        return run

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
                self.dispatcher.source = discovery
                await stopping.wait()
            finally:
                await discovery.stop()
                await self.dispatcher.close()
                await client.aclose()
                await self.nonces.close()
                await self.limiter.close()

        return run
