"""Back office (R8, 202): account search, the account 360 view, real-name review."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import StringConstraints
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from gridgate.accounts.models import Account, Binding
from gridgate.accounts.parts import AccountsParts
from gridgate.accounts.realname import ApplicationView, RealnameService
from gridgate.errors import GridgateError, NotFound
from gridgate.pii import mask_address, mask_name, mask_phone
from gridgate.schemas import Rfc3339Time, StrictModel, utc_text
from gridgate.web.deps import ADMIN_PREFIX, Admin, PageParams, require

__all__ = ["router"]

router = APIRouter(prefix=ADMIN_PREFIX, tags=["accounts"])
BackOffice = Annotated[Admin, Depends(require("admin", "reviewer", "auditor"))]
Reviewer = Annotated[Admin, Depends(require("admin", "reviewer"))]
AccountId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$")]


def _parts(request: Request) -> AccountsParts:
    found: AccountsParts = request.app.state.accounts
    return found


Parts = Annotated[AccountsParts, Depends(_parts)]


def _page(items: list[Any], total: int, paging: PageParams) -> dict[str, Any]:
    return {"items": items, "total": total, "page": paging.page, "page_size": paging.page_size}


async def _bindings(session: AsyncSession, account_ids: list[str]) -> dict[str, list[Binding]]:
    found: dict[str, list[Binding]] = {a: [] for a in account_ids}
    if account_ids:
        rows = await session.scalars(
            select(Binding).where(Binding.account_id.in_(account_ids)).order_by(Binding.bound_at)
        )
        for row in rows:
            found[row.account_id].append(row)
    return found


@router.get("/accounts", summary="Search accounts")
async def search_accounts(
    admin: BackOffice,
    parts: Parts,
    paging: PageParams,
    region: Annotated[str | None, Query(max_length=128)] = None,
    meter_book: Annotated[str | None, Query(max_length=64)] = None,
    bound_from: Rfc3339Time | None = None,
    bound_to: Rfc3339Time | None = None,
    phone: Annotated[str | None, Query(pattern=r"^1[3-9][0-9]{9}$")] = None,
    customer_no: Annotated[str | None, Query(pattern=r"^[0-9]{10}$")] = None,
    level: Annotated[int | None, Query(ge=0, le=2)] = None,
) -> dict[str, Any]:
    """Accounts by power-supply region, meter-reading book, binding time, phone, 户号, level."""
    query = select(Account)
    binding_filters = []
    if region:
        # Regions are paths (浙江省/杭州市/西湖区): a prefix or any level matches, and what
        # the operator typed matches as typed (a ``%`` or ``_`` is no wildcard).
        binding_filters.append(Binding.supply_region.contains(region, autoescape=True))
    if meter_book:
        binding_filters.append(Binding.meter_book == meter_book)
    if bound_from:
        binding_filters.append(Binding.bound_at >= bound_from)
    if bound_to:
        binding_filters.append(Binding.bound_at < bound_to)
    if customer_no:
        binding_filters.append(Binding.customer_no == customer_no)
    if binding_filters:
        matching = select(Binding.account_id).where(*binding_filters)
        query = query.where(Account.id.in_(matching))
    if level is not None:
        query = query.where(Account.level == level)
    async with admin.transaction() as session:
        service = parts.accounts(session)
        if phone:
            query = query.where(Account.phone_hash == service.phone_hash(phone))
        total = await session.scalar(select(func.count()).select_from(query.subquery()))
        rows = list(
            await session.scalars(
                query.order_by(Account.created_at.desc(), Account.id)
                .offset((paging.page - 1) * paging.page_size)
                .limit(paging.page_size)
            )
        )
        bound = await _bindings(session, [r.id for r in rows])
        items = [
            {
                "account_id": row.id,
                "phone": mask_phone(service.phone_of(row)),
                "level": row.level,
                "status": row.status,
                "created_at": utc_text(row.created_at),
                "bindings": [
                    {
                        "customer_no": b.customer_no,
                        "bound_at": utc_text(b.bound_at),
                        "supply_region": b.supply_region,
                        "meter_book": b.meter_book,
                    }
                    for b in bound[row.id]
                ],
            }
            for row in rows
        ]
    return _page(items, int(total or 0), paging)


@router.get("/accounts/{account_id}", summary="The account 360 view")
async def account_view(account_id: AccountId, admin: BackOffice, parts: Parts) -> dict[str, Any]:
    """Basic information from marketing, channel accounts, level, bindings, real-name, uploads,
    subscriptions (the service trajectory is at ``/trajectory``)."""
    async with admin.transaction() as session:
        service = parts.accounts(session)
        account = await service.get(account_id)
        if account is None:
            raise NotFound("no such account")
        bindings = await parts.bindings(session).bindings(account_id)
        customers = []
        for binding in bindings:
            entry: dict[str, Any] = {
                "customer_no": binding.customer_no,
                "bound_at": utc_text(binding.bound_at),
                "supply_region": binding.supply_region,
                "meter_book": binding.meter_book,
            }
            try:
                record = await parts.directory.customer(binding.customer_no)
            except GridgateError:
                record = None  # marketing unreachable: the rest of the view still helps
            if record is not None:
                entry.update(
                    name=mask_name(record.name),
                    voltage=record.voltage,
                    address=mask_address(record.address),
                )
            customers.append(entry)
        uploads = await RealnameService(session, parts.runtime.box, parts.files).uploads(account_id)
        channel_accounts = await service.channel_accounts(account_id)
        subscriptions = await parts.bindings(session).subscriptions(account_id)
        return {
            "account_id": account.id,
            "phone": mask_phone(service.phone_of(account)),
            "level": account.level,
            "status": account.status,
            "created_at": utc_text(account.created_at),
            "attributes": account.attributes,
            "channel_accounts": [
                {
                    "channel": c.channel,
                    "channel_user_id": c.channel_user_id,
                    "created_at": utc_text(c.created_at),
                }
                for c in channel_accounts
            ],
            "bindings": customers,
            "realname": {"status": uploads[0].status if uploads else "none"},
            "uploads": [_application(u) for u in uploads],
            "subscriptions": [vars_of(s) for s in subscriptions],
        }


def vars_of(item: Any) -> dict[str, Any]:
    """A slots dataclass as a dict."""
    return {name: getattr(item, name) for name in item.__slots__}


def _application(view: ApplicationView) -> dict[str, Any]:
    return {
        "id": view.id,
        "account_id": view.account_id,
        "status": view.status,
        "name": view.name,
        "id_number": view.id_number,
        "reason": view.reason,
        "reviewer": view.reviewer,
        "submitted_at": utc_text(view.submitted_at),
        "decided_at": utc_text(view.decided_at) if view.decided_at else None,
    }


@router.get("/accounts/{account_id}/uploads", summary="Uploaded materials of an account")
async def account_uploads(account_id: AccountId, admin: BackOffice, parts: Parts) -> dict[str, Any]:
    """Real-name applications of the account (masked), newest first."""
    async with admin.transaction() as session:
        uploads = await RealnameService(session, parts.runtime.box, parts.files).uploads(account_id)
    return {"items": [_application(u) for u in uploads], "total": len(uploads)}


@router.get("/accounts/{account_id}/subscriptions", summary="Subscriptions of an account")
async def account_subscriptions(
    account_id: AccountId, admin: BackOffice, parts: Parts
) -> dict[str, Any]:
    """Bill and outage notices per 户号 and channel."""
    async with admin.transaction() as session:
        items = await parts.bindings(session).subscriptions(account_id)
    return {"items": [vars_of(i) for i in items], "total": len(items)}


@router.get("/realname/applications", tags=["real-name"])
async def realname_applications(
    admin: Reviewer,
    parts: Parts,
    paging: PageParams,
    status: Literal["pending", "approved", "rejected"] | None = None,
) -> dict[str, Any]:
    """Applications for review, oldest first; name and ID number masked."""
    async with admin.transaction() as session:
        items, total = await RealnameService(session, parts.runtime.box, parts.files).applications(
            status=status, page=paging.page, page_size=paging.page_size
        )
    return _page([_application(i) for i in items], total, paging)


@router.post("/realname/applications/{application_id}/approve", tags=["real-name"])
async def approve(
    application_id: Annotated[int, Path(ge=1, le=2**62)], admin: Reviewer, parts: Parts
) -> dict[str, Any]:
    """Approve: the account becomes advanced (level 2) for tokens issued from now on."""
    async with admin.transaction() as session:
        view = await RealnameService(session, parts.runtime.box, parts.files).decide(
            application_id, approve=True, reason=None, actor=admin.actor
        )
    return _application(view)


class Rejection(StrictModel):
    """Why an application is rejected (shown to the customer)."""

    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]


@router.post("/realname/applications/{application_id}/reject", tags=["real-name"])
async def reject(
    application_id: Annotated[int, Path(ge=1, le=2**62)],
    body: Rejection,
    admin: Reviewer,
    parts: Parts,
) -> dict[str, Any]:
    """Reject with a reason."""
    async with admin.transaction() as session:
        view = await RealnameService(session, parts.runtime.box, parts.files).decide(
            application_id, approve=False, reason=body.reason, actor=admin.actor
        )
    return _application(view)
