"""Back office (R8, 202): account search, the account 360 view and profile, real-name review."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query

from gridgate.accounts.backoffice import AccountFilter, application_out
from gridgate.accounts.routes import Parts
from gridgate.accounts.schemas import (
    AccountSummaryOut,
    AccountViewOut,
    ApplicationOut,
    ApplicationsOut,
    EmailAddress,
    ProfileOut,
    ProfileUpdate,
    Rejection,
    SubscriptionsOut,
)
from gridgate.schemas import Page, Rfc3339Time
from gridgate.web.deps import ADMIN_PREFIX, Admin, PageParams, require

__all__ = ["router"]

router = APIRouter(prefix=ADMIN_PREFIX, tags=["accounts"])
BackOffice = Annotated[Admin, Depends(require("admin", "reviewer", "auditor"))]
Reviewer = Annotated[Admin, Depends(require("admin", "reviewer"))]
AdminOnly = Annotated[Admin, Depends(require("admin"))]
AccountId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$")]
ApplicationId = Annotated[int, Path(ge=1, le=2**62)]


@router.get("/accounts", summary="Search accounts", response_model_exclude_unset=True)
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
    email: Annotated[EmailAddress | None, Query(max_length=254)] = None,
) -> Page[AccountSummaryOut]:
    """Accounts by power-supply region, meter-reading book, binding time, phone, 户号, level,
    e-mail address; newest first."""
    where = AccountFilter(
        region=region,
        meter_book=meter_book,
        bound_from=bound_from,
        bound_to=bound_to,
        phone=phone,
        customer_no=customer_no,
        level=level,
        email=email,
    )
    async with admin.transaction() as session:
        items, total = await parts.backoffice(session).search(
            where, page=paging.page, page_size=paging.page_size
        )
    return Page(items=items, total=total, page=paging.page, page_size=paging.page_size)


@router.get(
    "/accounts/{account_id}", summary="The account 360 view", response_model_exclude_unset=True
)
async def account_view(account_id: AccountId, admin: BackOffice, parts: Parts) -> AccountViewOut:
    """Basic information from marketing, channel accounts, level, bindings, real-name, uploads,
    subscriptions (the service trajectory is at ``/trajectory``)."""
    async with admin.transaction() as session:
        return await parts.backoffice(session).view(account_id)


@router.get("/accounts/{account_id}/profile", summary="User name, e-mail address, attributes")
async def read_profile(account_id: AccountId, admin: BackOffice, parts: Parts) -> ProfileOut:
    """The account's profile as the customer keeps it, the e-mail address masked."""
    async with admin.transaction() as session:
        return await parts.profiles(session).read(account_id)


@router.patch("/accounts/{account_id}/profile", summary="Change user name, e-mail, attributes")
async def update_profile(
    account_id: AccountId, body: ProfileUpdate, admin: AdminOnly, parts: Parts
) -> ProfileOut:
    """A JSON merge patch (RFC 7396) of the profile, as the customer's own; audited without
    the e-mail address or attribute values."""
    async with admin.transaction() as session:
        return await parts.profiles(session).update_by_operator(account_id, body, admin.actor)


@router.get("/accounts/{account_id}/uploads", summary="Uploaded materials of an account")
async def account_uploads(
    account_id: AccountId, admin: BackOffice, parts: Parts
) -> ApplicationsOut:
    """Real-name applications of the account (masked), newest first."""
    async with admin.transaction() as session:
        uploads = await parts.backoffice(session).uploads(account_id)
    return ApplicationsOut(items=uploads, total=len(uploads))


@router.get("/accounts/{account_id}/subscriptions", summary="Subscriptions of an account")
async def account_subscriptions(
    account_id: AccountId, admin: BackOffice, parts: Parts
) -> SubscriptionsOut:
    """Bill and outage notices per 户号 and channel."""
    async with admin.transaction() as session:
        items = await parts.backoffice(session).subscriptions(account_id)
    return SubscriptionsOut(items=items, total=len(items))


@router.get("/realname/applications", tags=["real-name"])
async def realname_applications(
    admin: Reviewer,
    parts: Parts,
    paging: PageParams,
    status: Literal["pending", "approved", "rejected"] | None = None,
) -> Page[ApplicationOut]:
    """Applications for review, oldest first; name and ID number masked."""
    async with admin.transaction() as session:
        views, total = await parts.realname(session).applications(
            status=status, page=paging.page, page_size=paging.page_size
        )
    items = [application_out(view) for view in views]
    return Page(items=items, total=total, page=paging.page, page_size=paging.page_size)


@router.post("/realname/applications/{application_id}/approve", tags=["real-name"])
async def approve(application_id: ApplicationId, admin: Reviewer, parts: Parts) -> ApplicationOut:
    """Approve: the account becomes advanced (level 2) for tokens issued from now on."""
    async with admin.transaction() as session:
        view = await parts.realname(session).decide(
            application_id, approve=True, reason=None, actor=admin.actor
        )
    return application_out(view)


@router.post("/realname/applications/{application_id}/reject", tags=["real-name"])
async def reject(
    application_id: ApplicationId, body: Rejection, admin: Reviewer, parts: Parts
) -> ApplicationOut:
    """Reject with a reason."""
    async with admin.transaction() as session:
        view = await parts.realname(session).decide(
            application_id, approve=False, reason=body.reason, actor=admin.actor
        )
    return application_out(view)
