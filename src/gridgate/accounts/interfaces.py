"""What the accounts service needs from the world, as protocols with more than one implementation.

Each store has an embedded implementation for one process and a real one (memory or Redis
codes, a directory or another file store, the marketing system or a test's directory); the
settings name the one to use and :class:`~gridgate.accounts.parts.AccountsParts` builds it.
Services ask for these protocols and never build them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

__all__ = [
    "CodeStore",
    "CustomerDirectory",
    "CustomerRecord",
    "FileStore",
    "Limit",
    "Revoker",
    "SmsProvider",
]


@dataclass(frozen=True, slots=True)
class CustomerRecord:
    """A 户号 as marketing knows it."""

    customer_no: str
    name: str
    reserved_phone: str
    supply_region: str
    meter_book: str
    voltage: str
    address: str


class CustomerDirectory(Protocol):
    """Look-ups the binding flow needs (the marketing system, 营销系统)."""

    async def customer(self, customer_no: str) -> CustomerRecord | None:
        """The 户号's record, or None when marketing does not know it."""
        ...

    async def service_password_matches(self, customer_no: str, password: str) -> bool:
        """Whether ``password`` is the 户号's service password."""
        ...


class Revoker(Protocol):
    """Tells the gateways that sessions are revoked (in-process list, Redis feed …)."""

    async def revoke(self, session_ids: list[str], until: float) -> None:
        """Refuse access tokens of these sessions until ``until`` (epoch seconds)."""
        ...


class FileStore(Protocol):
    """Where uploaded files live; a reference is opaque to callers and stored on their rows."""

    async def put(self, data: bytes, *, content_type: str, owner: str) -> str:
        """Store ``data`` of ``owner`` (an account id) and return its reference."""
        ...

    async def get(self, ref: str) -> tuple[bytes, str]:
        """The bytes and content type of ``ref``; FileNotFoundError if gone, ValueError if bad."""
        ...

    async def delete(self, ref: str) -> None:
        """Remove ``ref``; removing a missing file is not an error."""
        ...


class SmsProvider(Protocol):
    """Delivers a text message to a mobile phone."""

    async def send(self, phone: str, text: str, *, purpose: str, code: str) -> None:
        """Deliver ``text`` (which carries ``code``; a notice has ``code=""``) to ``phone``."""
        ...


class Limit(NamedTuple):
    """At most ``max_count`` events per ``key`` in a window of ``window_s`` from the first."""

    key: str
    window_s: float
    max_count: int


class CodeStore(Protocol):
    """Where SMS codes (as digests) and send counters live, each with a time to live."""

    async def put_code(self, key: str, digest: bytes, *, attempts: int, ttl_s: float) -> None:
        """Store the code for ``key`` (phone and purpose), replacing any earlier one."""
        ...

    async def take_attempt(self, key: str) -> bytes | None:
        """Spend one attempt and return the digest; None if no code or no attempt is left."""
        ...

    async def consume(self, key: str, digest: bytes) -> bool:
        """Delete the code if it still has ``digest``: True for the one caller that did."""
        ...

    async def acquire(self, limits: Sequence[Limit]) -> float:
        """Count one event on every limit, or on none if one is full: 0, or seconds to wait."""
        ...

    async def close(self) -> None:
        """Release what the store holds."""
        ...
