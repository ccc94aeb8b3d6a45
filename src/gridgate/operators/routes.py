"""Admin API: operator sessions, operator management and the audit trail."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from gridgate.operators.audit import AuditFilter, list_events
from gridgate.operators.limits import SignInLimits
from gridgate.operators.schemas import (
    AuditEventOut,
    OperatorCreate,
    OperatorOut,
    OperatorUpdate,
    SessionCreate,
    SessionOut,
)
from gridgate.operators.services import OperatorService
from gridgate.runtime import Runtime
from gridgate.schemas import Page, Rfc3339Time
from gridgate.storage.models import utcnow
from gridgate.web.deps import (
    ADMIN_PREFIX,
    Admin,
    PageParams,
    get_runtime,
    require,
    sign_in_limits,
)

UsernameParam = Annotated[str, Path(pattern=r"^[a-z][a-z0-9_.\-]{0,63}$")]
FilterText = Annotated[str | None, Query(max_length=128, pattern=r"^[^\x00-\x1f\x7f]*$")]

__all__ = ["router"]

# The full prefix lives here so each route's own path is its whole template (metrics labels).
router = APIRouter(prefix=ADMIN_PREFIX)
AnyOperator = Annotated[Admin, Depends(require("admin", "reviewer", "auditor"))]
AdminOnly = Annotated[Admin, Depends(require("admin"))]
Auditor = Annotated[Admin, Depends(require("admin", "auditor"))]


@router.post("/session", tags=["session"], summary="Sign in as an operator")
async def create_session(
    body: SessionCreate,
    request: Request,
    runtime: Annotated[Runtime, Depends(get_runtime)],
    limits: Annotated[SignInLimits, Depends(sign_in_limits)],
) -> SessionOut:
    """Exchange user name and password for a short-lived Bearer token."""
    client_ip = request.client.host if request.client else None
    async with runtime.db.sessions() as session:
        try:
            operator = await OperatorService(session, limits=limits).authenticate(
                body.username, body.password.get_secret_value(), client_ip=client_ip
            )
            token = runtime.operator_tokens.issue(operator, utcnow())
            roles = list(operator.roles)
        finally:
            # Failure counters must be kept even though the sign-in is refused.
            await session.commit()
    return SessionOut(access_token=token, expires_in=runtime.operator_tokens.ttl_s, roles=roles)


@router.get("/session", tags=["session"], summary="Who am I")
async def read_session(admin: AnyOperator) -> dict[str, object]:
    """The operator the token belongs to, with their roles."""
    return {"username": admin.principal.username, "roles": sorted(admin.principal.roles)}


@router.delete("/session", status_code=204, tags=["session"], summary="Sign out everywhere")
async def delete_session(admin: AnyOperator) -> Response:
    """Revoke every token of the calling operator."""
    async with admin.transaction() as session:
        await OperatorService(session).logout(admin.principal.operator_id)
    return Response(status_code=204)


@router.get("/operators", tags=["operators"])
async def list_operators(admin: AdminOnly, paging: PageParams) -> Page[OperatorOut]:
    """Operators by user name."""
    async with admin.transaction() as session:
        items, total = await OperatorService(session).list_all(
            page=paging.page, page_size=paging.page_size
        )
    return Page(items=items, total=total, page=paging.page, page_size=paging.page_size)


@router.post("/operators", status_code=201, tags=["operators"])
async def create_operator(body: OperatorCreate, admin: AdminOnly) -> OperatorOut:
    """Add an operator."""
    async with admin.transaction() as session:
        return await OperatorService(session).create(body, admin.actor)


@router.get("/operators/{username}", tags=["operators"])
async def read_operator(username: UsernameParam, admin: AdminOnly) -> OperatorOut:
    """One operator."""
    async with admin.transaction() as session:
        return await OperatorService(session).get(username)


@router.patch("/operators/{username}", tags=["operators"])
async def update_operator(
    username: UsernameParam,
    body: OperatorUpdate,
    admin: AdminOnly,
    limits: Annotated[SignInLimits, Depends(sign_in_limits)],
) -> OperatorOut:
    """Change roles, display name, password or enabled (a new password lifts sign-in waits)."""
    async with admin.transaction() as session:
        return await OperatorService(session, limits=limits).update(username, body, admin.actor)


@router.delete("/operators/{username}", status_code=204, tags=["operators"])
async def delete_operator(username: UsernameParam, admin: AdminOnly) -> Response:
    """Remove an operator (never the last admin)."""
    async with admin.transaction() as session:
        await OperatorService(session).delete(username, admin.actor)
    return Response(status_code=204)


@router.get("/audit", tags=["audit"], summary="The audit trail, newest first")
async def read_audit(
    admin: Auditor,
    paging: PageParams,
    actor: FilterText = None,
    action: FilterText = None,
    resource_type: FilterText = None,
    resource_id: FilterText = None,
    since: Rfc3339Time | None = None,
    until: Rfc3339Time | None = None,
) -> Page[AuditEventOut]:
    """Every admin change: who, what, before and after (secrets redacted), when."""
    where = AuditFilter(actor, action, resource_type, resource_id, since, until)
    async with admin.transaction() as session:
        rows, total = await list_events(
            session, where, page=paging.page, page_size=paging.page_size
        )
    items = [AuditEventOut.model_validate(row, from_attributes=True) for row in rows]
    return Page(items=items, total=total, page=paging.page, page_size=paging.page_size)
