"""Unified accounts (R7–R9): registration, sign-in, sessions and refresh, channel accounts.

One account follows the customer across channels: registering on the app and signing in on
WeChat shows the same account. Phones are stored sealed with a keyed hash to find them.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from gridgate.accounts.models import Account, Binding, ChannelAccount, Session
from gridgate.accounts.tokens import ACCESS_TTL_S, KeyRing, TokenClaims
from gridgate.errors import BadCredentials, Conflict, InvalidRequest, InvalidToken, Locked
from gridgate.passwords import hash_password, needs_rehash, verify_password
from gridgate.storage.crypto import SecretBox
from gridgate.storage.models import utcnow

__all__ = ["PHONE", "AccountService", "Revoker", "TokenPair"]

PHONE = "account.phone"
REFRESH_TTL = timedelta(days=30)
#: Failed sign-ins before an account waits; the wait doubles per failure up to the cap. With
#: the cap at 15 minutes an attacker gets far fewer than ASVS's 100 tries per hour, and the
#: owner is never locked out for longer than that.
LOCK_AFTER = 5
LOCK_BASE_S = 30
LOCK_CAP_S = 900
MIN_PASSWORD, MAX_PASSWORD = 8, 128
#: 户号 carried in an access token (the oldest bindings first); more would bloat every request.
MAX_BOUND_IN_TOKEN = 50


class Revoker(Protocol):
    """Tells the gateways that sessions are revoked (in-process list, Redis feed …)."""

    async def revoke(self, session_ids: list[str], until: float) -> None:
        """Refuse access tokens of these sessions until ``until`` (epoch seconds)."""
        ...


@dataclass(frozen=True, slots=True)
class TokenPair:
    """The answer to a sign-in or refresh."""

    access_token: str
    expires_in: int
    refresh_token: str
    level: int


def _refresh_hash(token: str) -> str:
    # Refresh tokens are 256 random bits: a plain hash is enough (no dictionary to attack).
    return hashlib.sha256(token.encode()).hexdigest()


def check_password(password: str) -> None:
    """Refuse passwords outside the length bounds (NIST: length, not composition rules)."""
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise InvalidRequest(
            f"the password must have {MIN_PASSWORD} to {MAX_PASSWORD} characters", field="password"
        )


class AccountService:
    """Account operations inside one transaction."""

    def __init__(
        self, session: AsyncSession, box: SecretBox, keys: KeyRing, revoker: Revoker
    ) -> None:
        self.session = session
        self.box = box
        self.keys = keys
        self.revoker = revoker

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

    async def register(
        self, phone: str, password: str, *, channel: str, channel_user_id: str | None
    ) -> Account:
        """Create an account for a verified phone (the caller checked the SMS code)."""
        check_password(password)
        if await self.by_phone(phone) is not None:
            # The flow has to say it: the customer should sign in instead.
            raise Conflict("this phone number is already registered", field="phone")
        account = Account(
            id=secrets.token_hex(16),
            phone_hash=self.phone_hash(phone),
            phone_sealed=self.box.seal(phone, PHONE),
            password_hash=await asyncio.to_thread(hash_password, password),
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

    async def authenticate(self, phone: str, password: str) -> Account:
        """The account for phone + password, with growing waits after failures."""
        account = await self.by_phone(phone)
        now = utcnow()
        if account is not None and account.locked_until and account.locked_until > now:
            retry = int((account.locked_until - now).total_seconds()) + 1
            raise Locked("too many failed sign-ins; try again later", retry_after=retry)
        stored = account.password_hash if account is not None else None
        # argon2 takes ~100 ms of CPU: off the event loop, so other requests keep flowing.
        matches = await asyncio.to_thread(verify_password, stored, password)
        if not matches or account is None or account.status != "active":
            if account is not None and stored is not None:
                account.failed_logins += 1
                if account.failed_logins >= LOCK_AFTER:
                    wait = min(LOCK_BASE_S * 2 ** (account.failed_logins - LOCK_AFTER), LOCK_CAP_S)
                    account.locked_until = now + timedelta(seconds=wait)
            raise BadCredentials("phone number or password is wrong")
        account.failed_logins = 0
        account.locked_until = None
        if stored is not None and needs_rehash(stored):
            account.password_hash = hash_password(password)
        return account

    async def start_session(self, account: Account, channel: str) -> TokenPair:
        """A new session (and token family) for a signed-in account."""
        return await self._issue(account, channel, family_id=secrets.token_hex(16))

    async def _issue(self, account: Account, channel: str, *, family_id: str) -> TokenPair:
        refresh = secrets.token_urlsafe(32)
        row = Session(
            id=secrets.token_hex(16),
            account_id=account.id,
            family_id=family_id,
            channel=channel,
            refresh_hash=_refresh_hash(refresh),
            expires_at=utcnow() + REFRESH_TTL,
        )
        self.session.add(row)
        await self.session.flush()
        bound = await self.session.scalars(
            select(Binding.customer_no)
            .where(Binding.account_id == account.id)
            .order_by(Binding.bound_at)
            .limit(MAX_BOUND_IN_TOKEN)
        )
        access = await self.keys.issue(
            self.session, TokenClaims(account.id, account.level, channel, row.id, tuple(bound))
        )
        return TokenPair(access, ACCESS_TTL_S, refresh, account.level)

    async def refresh(self, refresh_token: str) -> TokenPair:
        """Rotate a refresh token; a token used twice revokes its whole family."""
        query = select(Session).where(Session.refresh_hash == _refresh_hash(refresh_token))
        row = (await self.session.scalars(query)).first()
        now = utcnow()
        if row is None or row.revoked_at is not None or row.expires_at <= now:
            raise InvalidToken("the refresh token is not valid")
        if row.used_at is not None:
            # Presented again after rotation: stolen or replayed. End every session of the family.
            await self.revoke_family(row.family_id)
            raise InvalidToken("the refresh token was already used; please sign in again")
        account = await self.get(row.account_id)
        if account is None or account.status != "active":
            raise InvalidToken("the account is not active")
        # Claim the token in one conditional UPDATE: of two concurrent refreshes with the same
        # token only one wins, and the other is treated as the reuse it is.
        claimed = await self.session.execute(
            update(Session)
            .where(Session.id == row.id, Session.used_at.is_(None), Session.revoked_at.is_(None))
            .values(used_at=now)
            .execution_options(synchronize_session=False)
        )
        if getattr(claimed, "rowcount", 0) != 1:
            await self.revoke_family(row.family_id)
            raise InvalidToken("the refresh token was already used; please sign in again")
        return await self._issue(account, row.channel, family_id=row.family_id)

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
