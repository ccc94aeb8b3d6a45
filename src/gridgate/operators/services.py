"""Operators: sign-in under limits, short-lived tokens, management under audit."""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from datetime import datetime

import jwt
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from gridgate.errors import BadCredentials, Conflict, InvalidToken, NotFound
from gridgate.operators.audit import Actor, record
from gridgate.operators.limits import SignInLimits
from gridgate.operators.models import Operator
from gridgate.operators.schemas import OperatorCreate, OperatorOut, OperatorUpdate, Role
from gridgate.password_policy import OPERATOR_PASSWORDS, PasswordPolicy
from gridgate.passwords import hash_password, needs_rehash, verify_password
from gridgate.storage.models import utcnow

__all__ = ["OperatorService", "Principal", "TokenIssuer"]

_ISSUER = "gridgate-admin"
_ALGORITHM = "HS256"


@dataclass(frozen=True, slots=True)
class Principal:
    """The operator behind a verified token."""

    operator_id: int
    username: str
    roles: frozenset[str]


class TokenIssuer:
    """Signs and checks operator access tokens (HS256 JWTs bound to a token generation)."""

    def __init__(self, key: bytes, ttl_s: int) -> None:
        self._key = key
        self.ttl_s = ttl_s

    def issue(self, operator: Operator, now: datetime) -> str:
        """A token for ``operator`` valid ``ttl_s`` seconds from ``now``."""
        claims = {
            "iss": _ISSUER,
            "aud": _ISSUER,
            "sub": str(operator.id),
            "gen": operator.token_generation,
            "iat": int(now.timestamp()),
            "exp": int(now.timestamp()) + self.ttl_s,
            "jti": secrets.token_urlsafe(12),
        }
        return jwt.encode(claims, self._key, algorithm=_ALGORITHM)

    def claims(self, token: str) -> tuple[int, int]:
        """The operator id and token generation of a valid token."""
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[_ALGORITHM],
                audience=_ISSUER,
                issuer=_ISSUER,
                options={"require": ["exp", "sub", "gen"]},
            )
            return int(claims["sub"]), int(claims["gen"])
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            raise InvalidToken() from exc


def operator_out(operator: Operator) -> OperatorOut:
    """The public view of an operator row."""
    return OperatorOut.model_validate(operator, from_attributes=True)


class OperatorService:
    """Operator sign-in and management inside one transaction."""

    def __init__(
        self,
        session: AsyncSession,
        *,
        limits: SignInLimits | None = None,
        policy: PasswordPolicy = OPERATOR_PASSWORDS,
    ) -> None:
        self.session = session
        #: None only outside the admin listener (the CLI, tests): nothing to limit there.
        self.limits = limits
        self.policy = policy

    async def _find(self, username: str) -> Operator | None:
        result = await self.session.scalars(select(Operator).where(Operator.username == username))
        return result.first()

    async def _get(self, username: str) -> Operator:
        operator = await self._find(username)
        if operator is None:
            raise NotFound(f"operator {username!r} does not exist")
        return operator

    async def authenticate(
        self, username: str, password: str, *, client_ip: str | None = None
    ) -> Operator:
        """The operator with these credentials, within the sign-in limits.

        Unknown user, wrong password and disabled operator all answer alike, and take as long
        (an unknown name is compared against a dummy hash), so the answer does not tell which
        user names exist. The sign-in is counted per address and per name in the shared store
        before the password is compared, unknown names included, so a refusal does not tell
        either; a right password clears the name's count.
        """
        attempt = await self.limits.attempt(username, client_ip) if self.limits else None
        try:
            operator = await self._find(username)
            matches = await asyncio.to_thread(
                verify_password, operator.password_hash if operator else None, password
            )
        except Exception:
            if self.limits and attempt:
                await self.limits.unchecked(attempt)
            raise
        if operator is None or not matches or not operator.enabled:
            raise BadCredentials("user name or password is wrong")
        if self.limits and attempt:
            await self.limits.succeeded(attempt)
        # Counters of the lock that lived in this row before the limits moved to the store.
        operator.failed_logins = 0
        operator.locked_until = None
        operator.last_login_at = utcnow()
        if needs_rehash(operator.password_hash):
            operator.password_hash = await asyncio.to_thread(hash_password, password)
        return operator

    async def principal(self, operator_id: int, generation: int) -> Principal:
        """The enabled operator a token names, if the token is still of the current generation."""
        operator = await self.session.get(Operator, operator_id)
        if operator is None or not operator.enabled or operator.token_generation != generation:
            raise InvalidToken("the token was revoked")
        return Principal(operator.id, operator.username, frozenset(operator.roles))

    async def logout(self, operator_id: int) -> None:
        """Revoke every token of the operator."""
        operator = await self.session.get(Operator, operator_id)
        if operator is not None:
            operator.token_generation += 1

    async def list_all(self, *, page: int, page_size: int) -> tuple[list[OperatorOut], int]:
        """Operators by user name."""
        total = await self.session.scalar(select(func.count()).select_from(Operator))
        rows = await self.session.scalars(
            select(Operator)
            .order_by(Operator.username)
            .offset((page - 1) * page_size)
            .limit(page_size)
        )
        return [operator_out(row) for row in rows], int(total or 0)

    async def get(self, username: str) -> OperatorOut:
        """One operator."""
        return operator_out(await self._get(username))

    async def create(self, data: OperatorCreate, actor: Actor) -> OperatorOut:
        """Add an operator (user names are unique)."""
        self.policy.check(data.password.get_secret_value(), username=data.username)
        if await self._find(data.username) is not None:
            raise Conflict(f"operator {data.username!r} already exists", field="username")
        operator = Operator(
            username=data.username,
            display_name=data.display_name,
            password_hash=await asyncio.to_thread(hash_password, data.password.get_secret_value()),
            roles=sorted(set(data.roles)),
            enabled=True,
            token_generation=0,
            failed_logins=0,
        )
        self.session.add(operator)
        await self.session.flush()
        out = operator_out(operator)
        await record(
            self.session,
            actor,
            "operator.create",
            "operator",
            data.username,
            after=out.model_dump(mode="json"),
        )
        return out

    async def update(self, username: str, data: OperatorUpdate, actor: Actor) -> OperatorOut:
        """Change roles, display name, password or enabled; the last admin stays an admin."""
        operator = await self._get(username)
        if data.password is not None:
            self.policy.check(data.password.get_secret_value(), username=username)
        before = operator_out(operator).model_dump(mode="json")
        demotes = data.roles is not None and "admin" not in data.roles
        disables = data.enabled is False
        if "admin" in operator.roles and (demotes or disables):
            await self._keep_an_admin(operator.id)
        if data.roles is not None:
            operator.roles = sorted(set(data.roles))
        if data.display_name is not None:
            operator.display_name = data.display_name
        if data.enabled is not None:
            operator.enabled = data.enabled
        if data.password is not None:
            operator.password_hash = await asyncio.to_thread(
                hash_password, data.password.get_secret_value()
            )
            operator.failed_logins = 0
            operator.locked_until = None
            if self.limits is not None:
                # A new password lifts the name's waits (the forgetful operator's way back).
                await self.limits.forget(username)
        if data.password is not None or disables or data.roles is not None:
            operator.token_generation += 1  # old tokens must not outlive the change
        await self.session.flush()
        after = operator_out(operator).model_dump(mode="json")
        if data.password is not None:
            after["password"] = "changed"  # noqa: S105 - redacted by the audit trail, but the fact is kept
        await record(
            self.session, actor, "operator.update", "operator", username, before=before, after=after
        )
        return operator_out(operator)

    async def delete(self, username: str, actor: Actor) -> None:
        """Remove an operator; never the last enabled admin."""
        operator = await self._get(username)
        if "admin" in operator.roles:
            await self._keep_an_admin(operator.id)
        before = operator_out(operator).model_dump(mode="json")
        await self.session.delete(operator)
        await record(self.session, actor, "operator.delete", "operator", username, before=before)

    async def _keep_an_admin(self, leaving_id: int) -> None:
        rows = await self.session.scalars(
            select(Operator).where(Operator.enabled.is_(True), Operator.id != leaving_id)
        )
        if not any("admin" in row.roles for row in rows):
            raise Conflict("this is the last enabled admin; add another admin first")

    async def ensure(self, username: str, password: str, roles: list[Role], actor: Actor) -> bool:
        """Create the operator unless one of that name exists; True when created."""
        if await self._find(username) is not None:
            return False
        await self.create(
            OperatorCreate.model_validate(
                {"username": username, "password": password, "roles": roles}
            ),
            actor,
        )
        return True
