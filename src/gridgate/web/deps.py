"""FastAPI dependencies shared by the admin routes of every domain."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from gridgate.attempts import MemoryAttemptStore
from gridgate.errors import AuthRequired, Conflict, PermissionDenied
from gridgate.operators.audit import Actor
from gridgate.operators.limits import SignInLimits
from gridgate.operators.services import OperatorService, Principal
from gridgate.runtime import Runtime
from gridgate.web.middleware import trace_id_of

__all__ = ["ADMIN_PREFIX", "Admin", "Pagination", "get_runtime", "require", "sign_in_limits"]

#: Where the admin API lives on the admin listener.
ADMIN_PREFIX = "/admin/v1"


def get_runtime(request: Request) -> Runtime:
    """The runtime the app factory attached to the app."""
    runtime: Runtime = request.app.state.runtime
    return runtime


def sign_in_limits(request: Request) -> SignInLimits:
    """The operator sign-in limits the app factory built over the platform's attempt store.

    An admin app assembled by hand (a test's) gets an in-process store on first use, so that
    sign-in is never without limits.
    """
    state = request.app.state
    limits: SignInLimits | None = getattr(state, "operator_limits", None)
    if limits is None:
        settings = get_runtime(request).settings
        limits = state.operator_limits = SignInLimits.from_settings(MemoryAttemptStore(), settings)
    return limits


@dataclass(frozen=True, slots=True)
class Pagination:
    """``?page=&page_size=`` of a list request (api.md: page from 1, page_size ≤ 200)."""

    page: int
    page_size: int


def _pagination(
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    page_size: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Pagination:
    return Pagination(page, page_size)


PageParams = Annotated[Pagination, Depends(_pagination)]


@dataclass(frozen=True, slots=True)
class Admin:
    """An authenticated operator's request: who, and a way into the database."""

    principal: Principal
    actor: Actor
    runtime: Runtime

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """One transaction; a constraint the checks missed (a race) answers 409, not 500."""
        try:
            async with self.runtime.db.transaction() as session:
                yield session
        except IntegrityError:
            raise Conflict("the change conflicts with existing data") from None


#: Declares the operator token in the OpenAPI document (Swagger UI's *Authorize* button);
#: a missing or malformed header is answered by :func:`require` as problem+json.
_BEARER = HTTPBearer(auto_error=False, description="Operator token from POST /admin/v1/session")


def require(*roles: str) -> Callable[..., Coroutine[Any, Any, Admin]]:
    """A dependency admitting operators holding at least one of ``roles``."""
    allowed = frozenset(roles)

    async def dependency(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)],
    ) -> Admin:
        if credentials is None or not credentials.credentials.strip():
            raise AuthRequired("an operator Bearer token is required")
        runtime = get_runtime(request)
        operator_id, generation = runtime.operator_tokens.claims(credentials.credentials.strip())
        async with runtime.db.sessions() as session:
            principal = await OperatorService(session).principal(operator_id, generation)
        if not principal.roles & allowed:
            raise PermissionDenied(f"this needs one of the roles: {', '.join(sorted(allowed))}")
        client = request.client.host if request.client else None
        actor = Actor(principal.username, principal.operator_id, client, trace_id_of(request.scope))
        return Admin(principal, actor, runtime)

    return dependency
