"""The channel-facing interfaces of the accounts service (api.md), served behind the gateway.

The gateway has already authenticated the channel and verified the customer's access token;
it passes who is calling in ``X-GG-Channel``, ``X-GG-Account``, ``X-GG-Session`` and
``X-GG-Client-IP`` (and strips any such header a caller sent). These headers are trusted
because the listener refuses every call without the gateway's ``X-GG-Internal`` signature
over them (:mod:`gridgate.internal_auth`, applied in :func:`gridgate.accounts.app.build_accounts`).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Request, Response, UploadFile
from sqlalchemy.ext.asyncio import AsyncSession

from gridgate.accounts import signin
from gridgate.accounts.bindings import SubscriptionItem
from gridgate.accounts.menus import menus_for
from gridgate.accounts.models import Account
from gridgate.accounts.parts import AccountsParts
from gridgate.accounts.schemas import (
    BindingBrief,
    BindRequest,
    BoundOut,
    ChallengeOut,
    ChallengeRequest,
    CustomerNo,
    MenusOut,
    MeOut,
    ProfileOut,
    ProfileUpdate,
    RealnameStatusOut,
    RegisteredOut,
    RegisterRequest,
    SmsRequest,
    SmsSentOut,
    SubscriptionModel,
    Subscriptions,
    TokenOut,
    TokenRequest,
)
from gridgate.accounts.services import TokenPair
from gridgate.errors import AuthRequired, InvalidRequest
from gridgate.pii import mask_phone

__all__ = ["router"]

router = APIRouter(prefix="/api/v1")


def parts_of(request: Request) -> AccountsParts:
    """The accounts parts the app factory attached."""
    found: AccountsParts = request.app.state.accounts
    return found


Parts = Annotated[AccountsParts, Depends(parts_of)]


def _channel(request: Request) -> str:
    channel = request.headers.get("x-gg-channel")
    if not channel:
        raise AuthRequired("calls reach the accounts service through the gateway")
    return channel


def _client_ip(request: Request) -> str:
    # The gateway's signed header, not X-Forwarded-For: a proxy in between may extend that.
    signed = request.headers.get("x-gg-client-ip", "").strip()
    return signed or (request.client.host if request.client else "")


async def _me(session: AsyncSession, parts: AccountsParts, request: Request) -> Account:
    return await parts.accounts(session).signed_in(request.headers.get("x-gg-account"))


def _tokens(pair: TokenPair) -> TokenOut:
    return TokenOut(
        access_token=pair.access_token,
        expires_in=pair.expires_in,
        refresh_token=pair.refresh_token,
        level=pair.level,
    )


@router.post("/sms/codes", status_code=202)
async def send_code(body: SmsRequest, request: Request, parts: Parts) -> SmsSentOut:
    """Send a one-time code; the answer is the same whether the phone is registered or not."""
    _channel(request)
    expires_in, resend_after = await parts.sms.send(
        body.phone, body.purpose, client_ip=_client_ip(request)
    )
    return SmsSentOut(expires_in=expires_in, resend_after=resend_after)


@router.post("/accounts", status_code=201)
async def register(body: RegisterRequest, request: Request, parts: Parts) -> RegisteredOut:
    """Register with a verified phone (a registered one answers as a wrong code)."""
    account = await signin.register(
        parts,
        body.phone,
        body.sms_code,
        body.password.get_secret_value(),
        channel=_channel(request),
        channel_user_id=body.channel_user_id,
    )
    return RegisteredOut(account_id=account.id, level=account.level)


@router.post("/auth/token")
async def token(body: TokenRequest, request: Request, parts: Parts) -> TokenOut:
    """Sign in, or rotate a refresh token."""
    channel = _channel(request)
    if body.grant_type == "refresh_token":
        if body.refresh_token is None:
            raise InvalidRequest("refresh_token is required", field="refresh_token")
        pair = await signin.refresh(parts, body.refresh_token.get_secret_value(), channel=channel)
        return _tokens(pair)
    if body.phone is None:
        raise InvalidRequest("phone is required", field="phone")
    if body.grant_type == "sms_code":
        if body.sms_code is None:
            raise InvalidRequest("sms_code is required", field="sms_code")
        secret = body.sms_code
    else:
        if body.password is None:
            raise InvalidRequest("password is required", field="password")
        secret = body.password.get_secret_value()
    pair = await signin.sign_in(
        parts,
        body.grant_type,
        body.phone,
        secret,
        channel=channel,
        client_ip=_client_ip(request),
        channel_user_id=body.channel_user_id,
    )
    return _tokens(pair)


@router.post("/auth/logout", status_code=204)
async def logout(request: Request, parts: Parts) -> Response:
    """End this session: its access token stops working at every gateway."""
    session_id = request.headers.get("x-gg-session")
    if not session_id:
        raise AuthRequired("sign in first")
    async with parts.transaction() as session:
        await parts.accounts(session).logout(session_id)
    return Response(status_code=204)


def _realname_status(status: str | None, reason: str | None = None) -> RealnameStatusOut:
    return RealnameStatusOut.model_validate({"status": status or "none", "reason": reason})


@router.get("/me", response_model_exclude_none=True)
async def me(request: Request, parts: Parts) -> MeOut:
    """The caller's account: masked phone, level, bindings, real-name status."""
    async with parts.transaction() as session:
        account = await _me(session, parts, request)
        bindings = await parts.bindings(session).bindings(account.id)
        latest = await parts.realname(session).latest(account.id)
        return MeOut(
            account_id=account.id,
            phone=mask_phone(parts.accounts(session).phone_of(account)),
            level=account.level,
            bindings=[
                BindingBrief(customer_no=b.customer_no, bound_at=b.bound_at) for b in bindings
            ],
            realname=_realname_status(latest.status if latest else None),
        )


@router.get("/me/profile")
async def read_profile(request: Request, parts: Parts) -> ProfileOut:
    """The caller's user name, e-mail address (in full: it is their own), level, attributes."""
    async with parts.transaction() as session:
        account = await _me(session, parts, request)
        return parts.profiles(session).profile(account)


@router.patch("/me/profile")
async def update_profile(body: ProfileUpdate, request: Request, parts: Parts) -> ProfileOut:
    """Change user name, e-mail address or attributes (a JSON merge patch, RFC 7396)."""
    async with parts.transaction() as session:
        account = await _me(session, parts, request)
        profiles = parts.profiles(session)
        await profiles.update(account, body)
        return profiles.profile(account)


@router.post("/me/bindings/challenge", status_code=202)
async def binding_challenge(body: ChallengeRequest, request: Request, parts: Parts) -> ChallengeOut:
    """Send a code to the phone the utility has on file for the 户号."""
    async with parts.transaction() as session:
        account = await _me(session, parts, request)
        sent = await parts.bindings(session).challenge(
            body.customer_no, client_ip=_client_ip(request), holder=account.id
        )
    return ChallengeOut(masked_phone=sent.masked_phone, expires_in=sent.expires_in)


@router.post("/me/bindings", status_code=201)
async def bind(body: BindRequest, request: Request, parts: Parts) -> BoundOut:
    """Bind a 户号; the account becomes primary (level 1)."""
    async with parts.transaction(keep_on_error=True) as session:
        account = await _me(session, parts, request)
        secret = body.service_password.get_secret_value() if body.service_password else None
        binding = await parts.bindings(session).bind(
            account,
            body.customer_no,
            sms_code=body.sms_code,
            service_password=secret,
            session_id=request.headers.get("x-gg-session"),
            client_ip=_client_ip(request),
        )
        return BoundOut(customer_no=binding.customer_no, level=account.level)


@router.delete("/me/bindings/{customer_no}", status_code=204)
async def unbind(customer_no: CustomerNo, request: Request, parts: Parts) -> Response:
    """Unbind one of your 户号."""
    async with parts.transaction() as session:
        account = await _me(session, parts, request)
        await parts.bindings(session).unbind(account, customer_no)
    return Response(status_code=204)


@router.post("/me/realname", status_code=202, response_model_exclude_none=True)
async def submit_realname(
    request: Request,
    parts: Parts,
    name: Annotated[str, Form(max_length=64)],
    id_number: Annotated[str, Form(max_length=18)],
    id_image: Annotated[UploadFile, File()],
) -> RealnameStatusOut:
    """Submit name, ID number and ID image for review."""
    image = await id_image.read(parts.max_image_bytes + 1)
    async with parts.transaction() as session:
        account = await _me(session, parts, request)
        await parts.realname(session).submit(account, name, id_number, image)
    return RealnameStatusOut(status="pending")


@router.get("/me/realname", response_model_exclude_none=True)
async def realname_status(request: Request, parts: Parts) -> RealnameStatusOut:
    """The state of the newest application (and the reason of a rejection)."""
    async with parts.transaction() as session:
        account = await _me(session, parts, request)
        latest = await parts.realname(session).latest(account.id)
    if latest is None:
        return _realname_status(None)
    return _realname_status(latest.status, latest.reason or None)


def _subscriptions(items: list[SubscriptionItem]) -> Subscriptions:
    return Subscriptions(
        items=[SubscriptionModel.model_validate(i, from_attributes=True) for i in items]
    )


@router.get("/me/subscriptions")
async def read_subscriptions(request: Request, parts: Parts) -> Subscriptions:
    """Bill and outage notices per 户号 and channel."""
    async with parts.transaction() as session:
        account = await _me(session, parts, request)
        return _subscriptions(await parts.bindings(session).subscriptions(account.id))


@router.put("/me/subscriptions")
async def replace_subscriptions(
    body: Subscriptions, request: Request, parts: Parts
) -> Subscriptions:
    """Replace the subscriptions (only bound 户号)."""
    async with parts.transaction() as session:
        account = await _me(session, parts, request)
        items = await parts.bindings(session).replace_subscriptions(
            account.id, [SubscriptionItem(**i.model_dump()) for i in body.items]
        )
    return _subscriptions(items)


@router.get("/me/menus", response_model_exclude_none=True)
async def my_menus(request: Request, parts: Parts) -> MenusOut:
    """The channel's menu tree for the caller, items above their level locked (R10)."""
    channel = _channel(request)
    async with parts.transaction() as session:
        level = 0
        if request.headers.get("x-gg-account"):
            level = (await _me(session, parts, request)).level
        return await menus_for(session, channel, level)
