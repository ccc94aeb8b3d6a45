"""Password hashing (argon2id) shared by operators and customer accounts."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

__all__ = ["hash_password", "needs_rehash", "verify_password"]

# argon2-cffi's default profile (RFC 9106 low-memory: t=3, 64 MiB, p=4) is above OWASP's
# argon2id minimum (19 MiB, t=2, p=1).
_HASHER = PasswordHasher()
# Verified against when a user name is unknown, so the answer takes as long as for a known one.
_DUMMY_HASH = _HASHER.hash("gridgate-timing-equaliser")


def hash_password(password: str) -> str:
    """Hash ``password`` for storage."""
    return _HASHER.hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    """True when ``password`` matches ``stored_hash``; None spends the same time and fails."""
    try:
        return _HASHER.verify(stored_hash or _DUMMY_HASH, password) and stored_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored_hash: str) -> bool:
    """True when ``stored_hash`` was made with weaker parameters than today's."""
    return _HASHER.check_needs_rehash(stored_hash)
