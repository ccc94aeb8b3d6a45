"""Unified accounts (R7–R9): registration, sign-in, sessions and refresh, channel accounts.

One account follows the customer across channels: registering on the app and signing in on
WeChat shows the same account. Phones are stored sealed with a keyed hash to find them.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NoReturn, cast

from sqlalchemy import Table, bindparam, exists, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from gridgate.accounts.interfaces import Revoker
from gridgate.accounts.models import Account, Binding, ChannelAccount, Session
from gridgate.accounts.tokens import ACCESS_TTL_S, KeyRing, TokenClaims
from gridgate.attempts import AttemptStore, Backoff
from gridgate.errors import (
    AuthRequired,
    BadCredentials,
    Conflict,
    InvalidRequest,
    InvalidToken,
    Locked,
    RefreshChannelMismatch,
)
from gridgate.passwords import hash_password, needs_rehash, verify_password
from gridgate.storage.crypto import SecretBox
from gridgate.storage.models import UTCDateTime, utcnow

__all__ = [
    "PHONE",
    "REGISTERED_NOTICE",
    "AccountService",
    "PhoneRegistered",
    "Revoker",
    "TokenPair",
]

PHONE = "account.phone"
REFRESH_TTL = timedelta(days=30)
#: Failed sign-ins before a phone waits; the wait doubles per failure up to the cap. With
#: the cap at 15 minutes an attacker gets far fewer than ASVS's 100 tries per hour, and the
#: owner is never locked out for longer than that. Counted per phone, registered or not, so
#: that the lock tells nobody whether the phone has an account.
LOCK_AFTER = 5
LOCK_BASE_S = 30
LOCK_CAP_S = 900
#: Failures are forgotten a day after the last one (a success forgets them at once).
LOCK_WINDOW_S = 86_400
MIN_PASSWORD, MAX_PASSWORD = 8, 128
#: The SMS that tells a phone's owner why registering it failed (at most one a day).
REGISTERED_NOTICE = (
    "【网上国网】您的手机号已注册网上国网账户，请直接登录；忘记密码可用短信验证码登录。"
    "如非您本人操作，请忽略本短信。"
)
#: 户号 carried in an access token (the oldest bindings first); more would bloat every request.
MAX_BOUND_IN_TOKEN = 50


@dataclass(frozen=True, slots=True)
class TokenPair:
    """The answer to a sign-in or refresh."""

    access_token: str
    expires_in: int
    refresh_token: str
    level: int


@dataclass(frozen=True, slots=True)
class _Holder:
    """What a new access token says about its account."""

    account_id: str
    level: int
    bound: tuple[str, ...]


# The refresh path's statements, built once as Core (no ORM unit of work, cached compilation).
_SESSIONS = cast(Table, Session.__table__)
_ACCOUNTS = cast(Table, Account.__table__)
_BINDINGS = cast(Table, Binding.__table__)
_NOW = bindparam("now", type_=UTCDateTime())
#: Claim a refresh token: matches only a live, unused token of an active account, presented
#: by the channel it was issued to.
_CLAIM = (
    update(_SESSIONS)
    .where(
        _SESSIONS.c.refresh_hash == bindparam("h"),
        _SESSIONS.c.channel == bindparam("ch"),
        _SESSIONS.c.used_at.is_(None),
        _SESSIONS.c.revoked_at.is_(None),
        _SESSIONS.c.expires_at > _NOW,
        exists().where(_ACCOUNTS.c.id == _SESSIONS.c.account_id, _ACCOUNTS.c.status == "active"),
    )
    .values(used_at=_NOW)
    .returning(_SESSIONS.c.account_id, _SESSIONS.c.family_id, _SESSIONS.c.channel)
)
#: Why a claim matched nothing (only on the failure path).
_WHY_REFUSED = (
    select(
        _SESSIONS.c.family_id,
        _SESSIONS.c.channel,
        _SESSIONS.c.used_at,
        _SESSIONS.c.revoked_at,
        _SESSIONS.c.expires_at,
        _ACCOUNTS.c.status,
    )
    .join_from(_SESSIONS, _ACCOUNTS, _ACCOUNTS.c.id == _SESSIONS.c.account_id, isouter=True)
    .where(_SESSIONS.c.refresh_hash == bindparam("h"))
)
#: The bound 户号 a token carries: the oldest bindings first.
_BOUND = (
    select(_BINDINGS.c.customer_no)
    .where(_BINDINGS.c.account_id == bindparam("account_id"))
    .order_by(_BINDINGS.c.bound_at, _BINDINGS.c.id)
    .limit(MAX_BOUND_IN_TOKEN)
)
#: The account's level and status with its bound 户号, in one round trip (one row per binding,
#: or one row with a NULL 户号 when there is none).
_HOLDER = (
    select(_ACCOUNTS.c.level, _ACCOUNTS.c.status, _BINDINGS.c.customer_no)
    .select_from(_ACCOUNTS.outerjoin(_BINDINGS, _BINDINGS.c.account_id == _ACCOUNTS.c.id))
    .where(_ACCOUNTS.c.id == bindparam("account_id"))
    .order_by(_BINDINGS.c.bound_at, _BINDINGS.c.id)
    .limit(MAX_BOUND_IN_TOKEN)
)
_INSERT_SESSION = insert(_SESSIONS)


def _refresh_hash(token: str) -> str:
    # Refresh tokens are 256 random bits: a plain hash is enough (no dictionary to attack).
    return hashlib.sha256(token.encode()).hexdigest()


def check_password(password: str) -> None:
    """Refuse passwords outside the length bounds (NIST: length, not composition rules)."""
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise InvalidRequest(
            f"the password must have {MIN_PASSWORD} to {MAX_PASSWORD} characters", field="password"
        )


class PhoneRegistered(Conflict):
    """Registration of a phone that already has an account (the caller decides what to say)."""


class AccountService:
    """Account operations inside one transaction."""

    def __init__(
        self,
        session: AsyncSession,
        box: SecretBox,
        keys: KeyRing,
        revoker: Revoker,
        *,
        attempts: AttemptStore,
    ) -> None:
        self.session = session
        self.box = box
        self.keys = keys
        self.revoker = revoker
        self.attempts = attempts

    def phone_hash(self, phone: str) -> str:
        """The keyed look-up hash of a phone number."""
        return self.box.lookup_hash(phone, PHONE)

    def phone_of(self, account: Account) -> str:
        """The account's phone in clear (for masking or sending a code)."""
        return self.box.open(account.phone_sealed, PHONE)

    async def by_phone(self, phone: str) -> Account | None:
        """The account of a phone number, if any."""
        query = select(Account).where(Account.phone_hash == self.phone_hash(phone))
        return (await self.session.scalars(query)).first()

    async def get(self, account_id: str) -> Account | None:
        """An account by id."""
        return await self.session.get(Account, account_id)

    async def signed_in(self, account_id: str | None) -> Account:
        """The active account of the caller, as the gateway named it from a verified token."""
        if not account_id:
            raise AuthRequired("sign in first")
        account = await self.get(account_id)
        if account is None or account.status != "active":
            raise InvalidToken("the account is not active")
        return account

    async def register(
        self, phone: str, password: str, *, channel: str, channel_user_id: str | None
    ) -> Account:
        """Create an account for a verified phone (the caller checked the SMS code).

        PhoneRegistered if the phone has an account, after the same work as a registration
        (the password is hashed either way), so that the time taken tells nothing.
        """
        check_password(password)
        password_hash = await asyncio.to_thread(hash_password, password)
        if await self.by_phone(phone) is not None:
            raise PhoneRegistered("this phone number is already registered", field="phone")
        account = Account(
            id=secrets.token_hex(16),
            phone_hash=self.phone_hash(phone),
            phone_sealed=self.box.seal(phone, PHONE),
            password_hash=password_hash,
            status="active",
            level=0,
            attributes={},
            failed_logins=0,
        )
        self.session.add(account)
        await self.session.flush()
        if channel_user_id:
            await self.link_channel(account, channel, channel_user_id)
        return account

    async def link_channel(self, account: Account, channel: str, channel_user_id: str) -> None:
        """Link the identity a channel knows to the account (idempotent)."""
        found = (
            await self.session.scalars(
                select(ChannelAccount).where(
                    ChannelAccount.channel == channel,
                    ChannelAccount.channel_user_id == channel_user_id,
                )
            )
        ).first()
        if found is None:
            self.session.add(
                ChannelAccount(
                    account_id=account.id, channel=channel, channel_user_id=channel_user_id
                )
            )
        elif found.account_id != account.id:
            raise Conflict(
                "this channel identity belongs to another account", field="channel_user_id"
            )
        else:
            found.last_seen_at = utcnow()

    def sign_in_rule(self, phone: str) -> Backoff:
        """The failure count of password sign-ins with ``phone`` (registered or not)."""
        return Backoff(
            f"sign-in:{self.phone_hash(phone)}", LOCK_AFTER, LOCK_BASE_S, LOCK_CAP_S, LOCK_WINDOW_S
        )

    async def authenticate(self, phone: str, password: str) -> Account:
        """The account for phone + password, with growing waits after failures.

        The same steps, answers and waits whether or not the phone is registered: the attempt
        is counted for the phone itself, and an unknown phone's password is checked against a
        dummy hash.
        """
        rule = self.sign_in_rule(phone)
        # Counted before the check, so that concurrent guesses cannot pass the count.
        wait = await self.attempts.attempt([rule])
        if wait > 0:
            raise Locked("too many failed sign-ins; try again later", retry_after=math.ceil(wait))
        account = await self.by_phone(phone)
        stored = account.password_hash if account is not None else None
        # argon2 takes ~100 ms of CPU: off the event loop, so other requests keep flowing.
        matches = await asyncio.to_thread(verify_password, stored, password)
        if not matches or account is None or account.status != "active":
            raise BadCredentials("phone number or password is wrong")
        await self.attempts.reset([rule.key])
        if stored is not None and needs_rehash(stored):
            account.password_hash = await asyncio.to_thread(hash_password, password)
        return account

    async def start_session(self, account: Account, channel: str) -> TokenPair:
        """A new session (and token family) for a signed-in account."""
        await self.session.flush()  # the account's pending changes first (a rehash …)
        conn = await self.session.connection()
        bound = await conn.scalars(_BOUND, {"account_id": account.id})
        return await self._issue(
            conn,
            _Holder(account.id, account.level, tuple(bound)),
            channel,
            family_id=secrets.token_hex(16),
        )

    async def _issue(
        self, conn: AsyncConnection, holder: _Holder, channel: str, *, family_id: str
    ) -> TokenPair:
        """Insert the new session (one Core INSERT) and sign its access token."""
        refresh = secrets.token_urlsafe(32)
        session_id = secrets.token_hex(16)
        now = utcnow()
        await conn.execute(
            _INSERT_SESSION,
            {
                "id": session_id,
                "account_id": holder.account_id,
                "family_id": family_id,
                "channel": channel,
                "refresh_hash": _refresh_hash(refresh),
                "created_at": now,
                "expires_at": now + REFRESH_TTL,
            },
        )
        claims = TokenClaims(holder.account_id, holder.level, channel, session_id, holder.bound)
        access = await self.keys.issue(self.session, claims)
        return TokenPair(access, ACCESS_TTL_S, refresh, holder.level)

    async def refresh(self, refresh_token: str, *, channel: str) -> TokenPair:
        """Rotate a refresh token presented by ``channel``; a token used twice, or presented by
        another channel than its own, revokes its whole family.

        The hot path is three Core statements and no ORM unit of work: the claim (a conditional
        ``UPDATE … RETURNING``: of two concurrent refreshes of one token only one matches, the
        other then finds it used and is treated as the reuse it is), the account's level with its
        bound 户号 (one joined SELECT), and the INSERT of the rotated session.
        """
        token_hash = _refresh_hash(refresh_token)
        now = utcnow()
        conn = await self.session.connection()
        claimed = (await conn.execute(_CLAIM, {"h": token_hash, "now": now, "ch": channel})).first()
        if claimed is None:
            await self._refused(conn, token_hash, now, channel)
        account_id, family_id, _ = claimed  # its channel is ``channel``: the claim matched it
        rows = (await conn.execute(_HOLDER, {"account_id": account_id})).all()
        if not rows or rows[0].status != "active":
            # Deactivated between the claim and this read: the claim stays, nothing is issued.
            raise InvalidToken("the account is not active")
        bound = tuple(row.customer_no for row in rows if row.customer_no is not None)
        holder = _Holder(account_id, rows[0].level, bound)
        return await self._issue(conn, holder, channel, family_id=family_id)

    async def _refused(
        self, conn: AsyncConnection, token_hash: str, now: datetime, channel: str
    ) -> NoReturn:
        """Why a claim matched nothing: unknown/expired/revoked, another channel, inactive
        account, or reuse."""
        row = (await conn.execute(_WHY_REFUSED, {"h": token_hash})).first()
        if row is None or row.revoked_at is not None or row.expires_at <= now:
            raise InvalidToken("the refresh token is not valid")
        if row.channel != channel:
            # Refresh tokens stay in the app they were issued to: one presented by another
            # channel was lifted from it. End that sign-in everywhere, as a reuse does.
            await self.revoke_family(row.family_id)
            raise RefreshChannelMismatch(
                "the refresh token was issued to another channel; please sign in again"
            )
        if row.used_at is None and row.status != "active":
            raise InvalidToken("the account is not active")
        # Presented again after rotation (or it lost a race to a concurrent refresh of the same
        # token): stolen or replayed. End every session of the family.
        await self.revoke_family(row.family_id)
        raise InvalidToken("the refresh token was already used; please sign in again")

    async def revoke_family(self, family_id: str) -> None:
        """Revoke every session of a family and tell the gateways."""
        ids = list(
            await self.session.scalars(select(Session.id).where(Session.family_id == family_id))
        )
        await self.session.execute(
            update(Session)
            .where(Session.family_id == family_id, Session.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )
        await self.revoker.revoke(ids, utcnow().timestamp() + ACCESS_TTL_S + 60)

    async def logout(self, session_id: str) -> None:
        """End the session (and its rotations): its access tokens stop working at once."""
        row = await self.session.get(Session, session_id)
        if row is not None:
            await self.revoke_family(row.family_id)

    async def set_level(self, account: Account, level: int) -> None:
        """Change the account level; tokens issued from now on carry it."""
        account.level = level

    async def channel_accounts(self, account_id: str) -> list[ChannelAccount]:
        """The channel identities linked to an account."""
        rows = await self.session.scalars(
            select(ChannelAccount).where(ChannelAccount.account_id == account_id)
        )
        return list(rows)
