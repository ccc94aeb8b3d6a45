"""Access tokens (EdDSA JWTs), their signing keys and the JWKS the gateways verify with.

Keys rotate without logging anyone out: a new key signs from now on, the retired one stays in
the JWKS until every token it signed has expired.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from gridgate.accounts.models import SigningKey
from gridgate.storage.crypto import SecretBox
from gridgate.storage.models import utcnow

__all__ = ["ACCESS_TTL_S", "KeyRing", "TokenClaims"]

ACCESS_TTL_S = 900
_PURPOSE = "accounts.signing_key"
#: How long a retired key stays published: the access-token lifetime plus clock leeway.
_PUBLISH_RETIRED_S = ACCESS_TTL_S + 60
#: How long a process reuses the current key before checking for a rotation elsewhere.
_CACHE_S = 10.0


@dataclass(frozen=True, slots=True)
class TokenClaims:
    """What an access token says (api.md: ``sub``, ``lvl``, ``ch``, ``sid``)."""

    account_id: str
    level: int
    channel: str
    session_id: str
    #: The bound 户号, so gateways can check data scope without asking (claim ``cns``).
    customer_nos: tuple[str, ...] = ()


class KeyRing:
    """Signs access tokens with the current key; publishes the keys still in use."""

    def __init__(self, box: SecretBox, *, issuer: str, audience: str) -> None:
        self._box = box
        self.issuer = issuer
        self.audience = audience
        self._cached: tuple[str, Ed25519PrivateKey, float] | None = None

    def _new_key(self) -> SigningKey:
        private = Ed25519PrivateKey.generate()
        kid = secrets.token_hex(8)
        raw = private.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        ).hex()
        jwk = OKPAlgorithm.to_jwk(private.public_key(), as_dict=True)
        jwk.update({"kid": kid, "use": "sig", "alg": "EdDSA"})
        return SigningKey(kid=kid, private_sealed=self._box.seal(raw, _PURPOSE), public_jwk=jwk)

    async def _current(self, session: AsyncSession) -> tuple[str, Ed25519PrivateKey]:
        now = time.monotonic()
        if self._cached is not None and self._cached[2] > now:
            return self._cached[0], self._cached[1]
        row = (
            await session.scalars(
                select(SigningKey)
                .where(SigningKey.retired_at.is_(None))
                .order_by(SigningKey.created_at.desc())
            )
        ).first()
        if row is None:
            row = self._new_key()
            session.add(row)
            await session.flush()
        private = Ed25519PrivateKey.from_private_bytes(
            bytes.fromhex(self._box.open(row.private_sealed, _PURPOSE))
        )
        self._cached = (row.kid, private, now + _CACHE_S)
        return row.kid, private

    async def issue(self, session: AsyncSession, claims: TokenClaims) -> str:
        """A signed access token valid for :data:`ACCESS_TTL_S` seconds."""
        kid, private = await self._current(session)
        now = int(time.time())
        payload = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": claims.account_id,
            "lvl": claims.level,
            "ch": claims.channel,
            "sid": claims.session_id,
            "cns": list(claims.customer_nos),
            "iat": now,
            "exp": now + ACCESS_TTL_S,
        }
        return jwt.encode(payload, private, algorithm="EdDSA", headers={"kid": kid})

    async def rotate(self, session: AsyncSession) -> str:
        """Start signing with a new key; the old ones stay published until their tokens expire."""
        now = utcnow()
        for row in await session.scalars(select(SigningKey).where(SigningKey.retired_at.is_(None))):
            row.retired_at = now
        row = self._new_key()
        session.add(row)
        await session.flush()
        self._cached = None
        return row.kid

    async def jwks(self, session: AsyncSession) -> dict[str, Any]:
        """The JWKS document: current keys and recently retired ones."""
        oldest = utcnow() - timedelta(seconds=_PUBLISH_RETIRED_S)
        rows = await session.scalars(
            select(SigningKey).where(
                (SigningKey.retired_at.is_(None)) | (SigningKey.retired_at > oldest)
            )
        )
        return {"keys": [row.public_jwk for row in rows]}
