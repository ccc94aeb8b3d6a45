"""Assembles the accounts service of one process and its background jobs."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import math
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import structlog
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession

from gridgate.accounts.backoffice import BackOfficeService
from gridgate.accounts.bindings import BindingLimits, BindingService
from gridgate.accounts.directory import CustomerDirectory, MarketingDirectory
from gridgate.accounts.files import MAX_IMAGE_BYTES, DirectoryFileStore, FileStore
from gridgate.accounts.profile import ProfileService
from gridgate.accounts.realname import RealnameService
from gridgate.accounts.services import AccountService
from gridgate.accounts.sms import (
    CodeStore,
    MemoryCodeStore,
    RedisCodeStore,
    SmsCodes,
    SmsNotices,
    SmsProvider,
    provider_for,
)
from gridgate.accounts.tokens import KeyRing
from gridgate.addresses import client_bucket
from gridgate.attempts import (
    AttemptStore,
    Backoff,
    MemoryAttemptStore,
    RedisAttemptStore,
)
from gridgate.errors import GridgateError, Locked, UpstreamUnavailable
from gridgate.gateway.tokens import RedisRevocationFeed
from gridgate.internal_auth import InternalAuth, InternalSigner
from gridgate.registry.client import Discovery, RegistryClient, RegistryUnavailable
from gridgate.runtime import Runtime

__all__ = ["AccountsParts", "LoginGuard", "RuntimeRevoker"]

_log = structlog.get_logger("gridgate.accounts")
Job = Callable[[asyncio.Event], Coroutine[Any, Any, None]]
#: Sign-in failures from one client address (IPv6: its /64) that pass; then each further
#: sign-in waits 60 s after the last, doubling up to 10 min; 10 min without one forgets them.
ADDRESS_RULE = Backoff("", free=30, base_s=60, cap_s=600, window_s=600)


class LoginGuard:
    """Counts sign-ins per client address; too many failures make that address wait.

    Keyed by address, so an attacker slows down only their own address, never the victim's
    account from elsewhere (the account's own lock is short and temporary). A sign-in is
    counted before it is checked, so concurrent guesses cannot slip past, and given back
    (:meth:`passed`) unless it failed.
    """

    def __init__(self, attempts: AttemptStore, rule: Backoff = ADDRESS_RULE) -> None:
        self.attempts = attempts
        self.rule = rule

    def _keys(self, client_ip: str) -> list[str]:
        return [f"sign-in-address:{client_bucket(client_ip)}"] if client_ip else []

    async def attempt(self, client_ip: str) -> None:
        """Count a sign-in from ``client_ip``, or refuse it while the address must wait."""
        rules = [self.rule.under(key) for key in self._keys(client_ip)]
        wait = await self.attempts.attempt(rules)
        if wait > 0:
            raise Locked("too many failed sign-ins from this address", retry_after=math.ceil(wait))

    async def passed(self, client_ip: str) -> None:
        """Give back a counted sign-in that was no failure."""
        await self.attempts.refund(self._keys(client_ip))


class RuntimeRevoker:
    """Revokes sessions for a gateway in this process, and for every gateway through Redis."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def revoke(self, session_ids: list[str], until: float) -> None:
        """Add the sessions to the revocation list (and publish them when Redis is used)."""
        for session_id in session_ids:
            self.runtime.revocations.revoke(session_id, until)
        url = self.runtime.settings.redis_url
        if url:
            redis = Redis.from_url(url)
            try:
                feed = RedisRevocationFeed(redis, self.runtime.revocations)
                for session_id in session_ids:
                    await feed.publish(session_id, until)
            finally:
                await redis.aclose()


class _PendingDirectory:
    """Stands in until discovery of the marketing system has started."""

    async def customer(self, customer_no: str) -> None:
        raise UpstreamUnavailable("the marketing system has not been reached yet")

    async def service_password_matches(self, customer_no: str, password: str) -> bool:
        raise UpstreamUnavailable("the marketing system has not been reached yet")


@dataclass
class AccountsParts:
    """The accounts service's collaborators."""

    runtime: Runtime
    sms: SmsCodes
    store: CodeStore
    files: FileStore
    keys: KeyRing
    login_guard: LoginGuard
    revoker: RuntimeRevoker
    #: Failure counts with growing waits: sign-in per phone and per address, service
    #: passwords (bindings); the admin listener's operator sign-in limits share it.
    attempts: AttemptStore
    #: SMS notices (failed and successful bindings, registering a registered phone).
    notices: SmsNotices
    directory: CustomerDirectory = field(default_factory=_PendingDirectory)
    max_image_bytes: int = MAX_IMAGE_BYTES

    @classmethod
    def build(
        cls,
        runtime: Runtime,
        *,
        directory: CustomerDirectory | None = None,
        provider: SmsProvider | None = None,
    ) -> AccountsParts:
        """Wire the stores the settings name."""
        settings = runtime.settings
        store: CodeStore
        attempts: AttemptStore
        if settings.redis_url:
            redis = Redis.from_url(settings.redis_url)
            store = RedisCodeStore(redis, owns_client=True)
            attempts = RedisAttemptStore(redis)  # the code store closes the shared client
        else:
            store = MemoryCodeStore()
            attempts = MemoryAttemptStore()
        provider = provider or provider_for(
            settings.sms_provider,
            production=settings.production,
            outbox=settings.data_dir / "sms-outbox.jsonl",
            url=settings.sms_http_url,
            template=settings.sms_template,
            token=settings.sms_http_token.get_secret_value() if settings.sms_http_token else None,
        )
        # A key of its own for code digests, derived so it changes with the data key.
        key = hmac.new(settings.data_keys[0], b"gridgate-sms-codes", hashlib.sha256).digest()
        parts = cls(
            runtime=runtime,
            sms=SmsCodes(store, provider, key=key),
            store=store,
            files=DirectoryFileStore(settings.data_dir / "uploads", runtime.box),
            keys=KeyRing(
                runtime.box, issuer=settings.token_issuer, audience=settings.token_audience
            ),
            login_guard=LoginGuard(attempts),
            revoker=RuntimeRevoker(runtime),
            attempts=attempts,
            notices=SmsNotices(provider, store),
        )
        if directory is not None:
            parts.directory = directory
        return parts

    @contextlib.asynccontextmanager
    async def transaction(self, *, keep_on_error: bool = False) -> AsyncIterator[AsyncSession]:
        """One transaction; ``keep_on_error`` commits failure counters even when the call fails
        with a :class:`~gridgate.errors.GridgateError` (any other error rolls back)."""
        async with self.runtime.db.sessions() as session:
            try:
                yield session
            except GridgateError:
                if keep_on_error:
                    await session.commit()
                raise
            await session.commit()

    def accounts(self, session: AsyncSession) -> AccountService:
        """The account service on ``session``."""
        return AccountService(
            session, self.runtime.box, self.keys, self.revoker, attempts=self.attempts
        )

    def bindings(self, session: AsyncSession) -> BindingService:
        """The binding service on ``session``."""
        return BindingService(
            session,
            self.directory,
            self.sms,
            attempts=self.attempts,
            notices=self.notices,
            box=self.runtime.box,
            limits=BindingLimits.from_settings(self.runtime.settings),
            allow_shared=self.runtime.settings.accounts_allow_shared_binding,
        )

    def realname(self, session: AsyncSession) -> RealnameService:
        """The real-name service on ``session``."""
        return RealnameService(session, self.runtime.box, self.files)

    def profiles(self, session: AsyncSession) -> ProfileService:
        """The profile service (user name, e-mail address, attributes) on ``session``."""
        return ProfileService(session, self.runtime.box)

    def backoffice(self, session: AsyncSession) -> BackOfficeService:
        """The back office's account look-ups on ``session``."""
        return BackOfficeService(
            session,
            accounts=self.accounts(session),
            bindings=self.bindings(session),
            realname=self.realname(session),
            profiles=self.profiles(session),
            directory=self.directory,
        )

    def jobs(self, registry_urls: list[str]) -> list[Job]:
        """Discovery of the marketing system, for binding."""

        async def run(stopping: asyncio.Event) -> None:
            token = self.runtime.settings.registry_token
            client = RegistryClient(
                registry_urls, token=token.get_secret_value() if token else None
            )
            discovery = Discovery(client, services=["marketing"])
            signer = InternalSigner(self.runtime.internal_keys)
            directory = MarketingDirectory(discovery, auth=InternalAuth(signer, "marketing"))
            try:
                while not stopping.is_set():
                    try:
                        await discovery.start()
                        break
                    except RegistryUnavailable as exc:
                        _log.warning("accounts_waiting_for_registry", error=str(exc))
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(stopping.wait(), timeout=1.0)
                self.directory = directory
                await stopping.wait()
            finally:
                await discovery.stop()
                await directory.aclose()
                await client.aclose()
                await self.notices.drain()
                await self.attempts.close()
                await self.store.close()

        return [run]
