"""The long-lived objects of a running process, built once from the settings."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from redis.asyncio import BlockingConnectionPool, Redis

from gridgate.gateway.tokens import MemoryRevocationList
from gridgate.internal_auth import InternalKeys
from gridgate.operators.services import TokenIssuer
from gridgate.registry.auth import RegistryAuth
from gridgate.registry.interfaces import RegistryStore, Timings
from gridgate.registry.memory import MemoryRegistryStore
from gridgate.registry.redis_store import RedisRegistryStore
from gridgate.settings import Settings
from gridgate.storage.crypto import SecretBox
from gridgate.storage.db import Database

__all__ = ["Runtime"]

#: Connections one process keeps to Redis (watchers hold one each while they wait).
REDIS_POOL_SIZE = 1024


@dataclass(slots=True)
class Runtime:
    """What every role's routes and background tasks are handed: settings and stores."""

    settings: Settings
    db: Database
    box: SecretBox
    operator_tokens: TokenIssuer
    registry: RegistryStore
    registry_auth: RegistryAuth
    #: Keys of the ``X-GG-Internal`` signatures between the gateway and the services.
    internal_keys: InternalKeys
    #: Sessions revoked at logout, consulted by a gateway in this process (and fed from Redis).
    revocations: MemoryRevocationList = field(default_factory=MemoryRevocationList)
    #: Called after every committed catalog change (a gateway in this process reloads at once).
    catalog_listeners: list[Callable[[], None]] = field(default_factory=list)

    def catalog_changed(self) -> None:
        """Tell in-process listeners that the catalog changed."""
        for listener in self.catalog_listeners:
            listener()

    @classmethod
    def build(cls, settings: Settings) -> Runtime:
        """Wire the stores the settings name (keys must already be resolved)."""
        db = Database(settings.effective_database_url)
        box = SecretBox(settings.data_keys, lookup_key=settings.lookup_key_bytes)
        timings = Timings(
            heartbeat_interval_s=settings.registry_heartbeat_s,
            unhealthy_after_s=settings.registry_unhealthy_s,
            remove_after_s=settings.registry_remove_s,
        )
        registry: RegistryStore
        if settings.redis_url:
            # Each watch long-poll holds a connection while it waits: a pool that makes a
            # caller wait for a free connection instead of failing once it is exhausted.
            pool = BlockingConnectionPool.from_url(
                settings.redis_url, max_connections=REDIS_POOL_SIZE, timeout=5
            )
            registry = RedisRegistryStore(Redis.from_pool(pool), timings, owns_client=True)
        else:
            registry = MemoryRegistryStore(timings)
        token = settings.registry_token.get_secret_value() if settings.registry_token else None
        return cls(
            settings=settings,
            db=db,
            box=box,
            operator_tokens=TokenIssuer(settings.signing_key, settings.operator_token_ttl_s),
            registry=registry,
            registry_auth=RegistryAuth(db, box, token=token),
            internal_keys=InternalKeys(settings.signing_key),
        )

    async def close(self) -> None:
        """Release connections."""
        await self.registry.close()
        await self.db.dispose()
