"""Limits on operator sign-in: attempts per client address and per user name, growing waits.

Counted in the platform's attempt store (:mod:`gridgate.attempts`, memory or Redis) before
the password is compared, so concurrent guesses cannot slip past a count. A name's tally is
split in two: tries from addresses where the name signed in before (*familiar*) and tries
from anywhere else (*strangers*). Strangers hammering a name can keep it waiting for other
strangers, but never for its operator at their usual addresses.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from dataclasses import dataclass

from gridgate.addresses import client_bucket
from gridgate.attempts import AttemptStore, Backoff
from gridgate.errors import TooManyFailures
from gridgate.settings import Settings

__all__ = ["FORGET_AFTER_S", "GROWTH", "KNOWN_FOR_S", "SignInAttempt", "SignInLimits"]

#: Waits double per further failure up to this many times the first (four doublings).
GROWTH = 16
#: Failures are forgotten this long after the last one.
FORGET_AFTER_S = 86_400
#: How long an address where a name signed in stays familiar to that name.
KNOWN_FOR_S = 30 * 86_400
_PREFIX = "operator-sign-in"


def _rule(free: int, first_wait_s: int) -> Backoff:
    cap_s = first_wait_s * GROWTH
    return Backoff("", free=free, base_s=first_wait_s, cap_s=cap_s, window_s=FORGET_AFTER_S)


@dataclass(frozen=True, slots=True)
class SignInAttempt:
    """One counted sign-in: the tallies it was counted on, and where it would be familiar."""

    address: str | None
    name: str
    known: str | None


class SignInLimits:
    """Sign-ins counted per client address (IPv6: its /64) and per user name, known or not.

    Both answer alike, whether or not the user name exists, with
    :class:`~gridgate.errors.TooManyFailures`. The store keeps no user name, only a keyed
    digest (people type passwords into the user-name box).
    """

    def __init__(
        self,
        store: AttemptStore,
        *,
        per_address: Backoff,
        per_name: Backoff,
        name_key: bytes,
        known_for_s: float = KNOWN_FOR_S,
    ) -> None:
        self.store = store
        self.per_address = per_address
        self.per_name = per_name
        self._name_key = name_key
        self.known_for_s = known_for_s

    @classmethod
    def from_settings(cls, store: AttemptStore, settings: Settings) -> SignInLimits:
        """The limits the settings ask for; names are digested with a key of their own."""
        return cls(
            store,
            per_address=_rule(
                settings.operator_address_lockout_threshold, settings.operator_address_lockout_s
            ),
            per_name=_rule(settings.operator_lockout_threshold, settings.operator_lockout_s),
            name_key=hmac.new(
                settings.signing_key, b"gridgate-operator-sign-in-names", hashlib.sha256
            ).digest(),
        )

    def _digest(self, *parts: str) -> str:
        message = "\0".join(parts).encode("utf-8")
        return hmac.new(self._name_key, message, hashlib.sha256).hexdigest()[:32]

    def _name_keys(self, username: str) -> tuple[str, str]:
        """The name's tallies: from strangers, and from its familiar addresses."""
        name = self._digest(username.strip().casefold())
        return f"{_PREFIX}:name:{name}", f"{_PREFIX}:name:{name}:familiar"

    async def attempt(self, username: str, client_ip: str | None) -> SignInAttempt:
        """Count a sign-in before any password is compared, or refuse it while it must wait."""
        strangers, familiar = self._name_keys(username)
        address = known = None
        if client_ip:
            bucket = client_bucket(client_ip)
            address = f"{_PREFIX}:address:{bucket}"
            known = f"{_PREFIX}:known:{self._digest(username.strip().casefold(), bucket)}"
        name = familiar if known and await self.store.marked(known) else strangers
        rules = [self.per_name.under(name)]
        if address:
            rules.append(self.per_address.under(address))
        wait = await self.store.attempt(rules)
        if wait > 0:
            raise TooManyFailures(
                "too many failed sign-ins; try again later", retry_after=math.ceil(wait)
            )
        return SignInAttempt(address, name, known)

    async def succeeded(self, attempt: SignInAttempt) -> None:
        """The password was right: clear the name's tally the sign-in counted on, give the
        address its try back, and make the address familiar to the name."""
        await self.store.reset([attempt.name])
        if attempt.address:
            await self.store.refund([attempt.address])
        if attempt.known:
            await self.store.mark(attempt.known, self.known_for_s)

    async def unchecked(self, attempt: SignInAttempt) -> None:
        """Nothing was compared (the database failed): the try was no failure."""
        await self.store.refund([key for key in (attempt.name, attempt.address) if key])

    async def forget(self, username: str) -> None:
        """Clear every tally of the name (an admin set a new password)."""
        await self.store.reset(self._name_keys(username))
