"""The channel-facing interfaces of the accounts service (api.md), served behind the gateway.

The gateway has already authenticated the channel and verified the customer's access token;
it passes who is calling in ``X-GG-Channel``, ``X-GG-Account``, ``X-GG-Session`` and
``X-GG-Client-IP`` (and strips any such header a caller sent). These headers are trusted
because the listener refuses every call without the gateway's ``X-GG-Internal`` signature
over them (:mod:`gridgate.internal_auth`, applied in :func:`gridgate.accounts.app.build_accounts`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, File, Form, Request, Response, UploadFile
from pydantic import BaseModel, Field, SecretStr, StringConstraints
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from gridgate.accounts.bindings import SubscriptionItem
from gridgate.accounts.models import Account
from gridgate.accounts.parts import AccountsParts
from gridgate.accounts.realname import RealnameService
from gridgate.accounts.services import REGISTERED_NOTICE, PhoneRegistered, TokenPair
from gridgate.accounts.sms import SmsCodeInvalid
from gridgate.catalog.models import Channel
from gridgate.errors import AuthRequired, GridgateError, InvalidRequest, InvalidToken
from gridgate.permissions.models import FunctionRow, MenuRow
from gridgate.pii import mask_phone
from gridgate.schemas import StrictModel, utc_text

__all__ = ["router"]

router = APIRouter(prefix="/api/v1")
Phone = Annotated[str, StringConstraints(pattern=r"^1[3-9][0-9]{9}$")]
Code6 = Annotated[str, StringConstraints(pattern=r"^[0-9]{6}$")]
Password = Annotated[SecretStr, Field(min_length=8, max_length=128)]
CustomerNo = Annotated[str, StringConstraints(pattern=r"^[0-9]{10}$")]
ChannelUserId = Annotated[str, StringConstraints(min_length=1, max_length=128)]


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


@asynccontextmanager
async def _transaction(
    parts: AccountsParts, *, keep_on_error: bool = False
) -> AsyncIterator[AsyncSession]:
    """One transaction; ``keep_on_error`` commits failure counters even when the call fails."""
    async with parts.runtime.db.sessions() as session:
        try:
            yield session
        except GridgateError:
            if keep_on_error:
                await session.commit()
            raise
        await session.commit()


async def _me(session: AsyncSession, parts: AccountsParts, request: Request) -> Account:
    account_id = request.headers.get("x-gg-account")
    if not account_id:
        raise AuthRequired("sign in first")
    account = await parts.accounts(session).get(account_id)
    if account is None or account.status != "active":
        raise InvalidToken("the account is not active")
    return account


def _tokens(pair: TokenPair) -> dict[str, object]:
    return {
        "access_token": pair.access_token,
        "token_type": "Bearer",
        "expires_in": pair.expires_in,
        "refresh_token": pair.refresh_token,
        "level": pair.level,
    }


class SmsRequest(StrictModel):
    """``POST /sms/codes``."""

    phone: Phone
    purpose: Literal["register", "login", "bind", "reset_password"]


@router.post("/sms/codes", status_code=202)
async def send_code(body: SmsRequest, request: Request, parts: Parts) -> dict[str, int]:
    """Send a one-time code; the answer is the same whether the phone is registered or not."""
    _channel(request)
    expires_in, resend_after = await parts.sms.send(
        body.phone, body.purpose, client_ip=_client_ip(request)
    )
    return {"expires_in": expires_in, "resend_after": resend_after}


class RegisterRequest(StrictModel):
    """``POST /accounts``."""

    phone: Phone
    sms_code: Code6
    password: Password
    channel_user_id: ChannelUserId | None = None


@router.post("/accounts", status_code=201)
async def register(body: RegisterRequest, request: Request, parts: Parts) -> dict[str, object]:
    """Register with a verified phone; the channel identity is linked when given.

    A phone that has an account answers as a wrong code does, and its owner learns why by
    SMS: the answer tells nobody else whether the phone is registered.
    """
    channel = _channel(request)
    await parts.sms.verify(body.phone, "register", body.sms_code)
    try:
        async with _transaction(parts) as session:
            account = await parts.accounts(session).register(
                body.phone,
                body.password.get_secret_value(),
                channel=channel,
                channel_user_id=body.channel_user_id,
            )
            return {"account_id": account.id, "level": account.level}
    except PhoneRegistered:
        parts.notices.send_later(
            body.phone,
            REGISTERED_NOTICE,
            purpose="register_notice",
            once_per=(f"registered:{body.phone}", 86_400),
        )
        raise SmsCodeInvalid from None


class TokenRequest(StrictModel):
    """``POST /auth/token`` (password, SMS code or refresh token)."""

    grant_type: Literal["password", "sms_code", "refresh_token"]
    phone: Phone | None = None
    password: Annotated[SecretStr, Field(max_length=128)] | None = None
    sms_code: Code6 | None = None
    refresh_token: Annotated[SecretStr, Field(max_length=256)] | None = None
    channel_user_id: ChannelUserId | None = None


@router.post("/auth/token")
async def token(body: TokenRequest, request: Request, parts: Parts) -> dict[str, object]:
    """Sign in, or rotate a refresh token."""
    channel = _channel(request)
    if body.grant_type == "refresh_token":
        if body.refresh_token is None:
            raise InvalidRequest("refresh_token is required", field="refresh_token")
        async with _transaction(parts, keep_on_error=True) as session:
            return _tokens(
                await parts.accounts(session).refresh(
                    body.refresh_token.get_secret_value(), channel=channel
                )
            )
    if body.phone is None:
        raise InvalidRequest("phone is required", field="phone")
    if body.grant_type == "sms_code" and body.sms_code is None:
        raise InvalidRequest("sms_code is required", field="sms_code")
    if body.grant_type == "password" and body.password is None:
        raise InvalidRequest("password is required", field="password")
    return await _sign_in(parts, body, body.phone, channel, _client_ip(request))


async def _sign_in(
    parts: AccountsParts, body: TokenRequest, phone: str, channel: str, client_ip: str
) -> dict[str, object]:
    """A password or SMS-code sign-in, counted against the client address."""
    # Counted before anything is checked, so that concurrent guesses cannot slip past; given
    # back unless the sign-in failed (a wrong SMS code is bounded by the code's own attempts).
    await parts.login_guard.attempt(client_ip)
    failed = False
    try:
        if body.sms_code is not None and body.grant_type == "sms_code":
            await parts.sms.verify(phone, "login", body.sms_code)
        async with _transaction(parts, keep_on_error=True) as session:
            service = parts.accounts(session)
            try:
                if body.password is not None and body.grant_type == "password":
                    account = await service.authenticate(phone, body.password.get_secret_value())
                else:
                    found = await service.by_phone(phone)
                    if found is None or found.status != "active":
                        # As a wrong code: sign-in does not tell who is registered.
                        raise SmsCodeInvalid("the code is not valid")
                    account = found
            except GridgateError:
                failed = True
                raise
            if body.channel_user_id:
                await service.link_channel(account, channel, body.channel_user_id)
            return _tokens(await service.start_session(account, channel))
    finally:
        if not failed:
            await parts.login_guard.passed(client_ip)


@router.post("/auth/logout", status_code=204)
async def logout(request: Request, parts: Parts) -> Response:
    """End this session: its access token stops working at every gateway."""
    session_id = request.headers.get("x-gg-session")
    if not session_id:
        raise AuthRequired("sign in first")
    async with _transaction(parts) as session:
        await parts.accounts(session).logout(session_id)
    return Response(status_code=204)


@router.get("/me")
async def me(request: Request, parts: Parts) -> dict[str, object]:
    """The caller's account: masked phone, level, bindings, real-name status."""
    async with _transaction(parts) as session:
        account = await _me(session, parts, request)
        bindings = await parts.bindings(session).bindings(account.id)
        latest = await RealnameService(session, parts.runtime.box, parts.files).latest(account.id)
        return {
            "account_id": account.id,
            "phone": mask_phone(parts.accounts(session).phone_of(account)),
            "level": account.level,
            "bindings": [
                {"customer_no": b.customer_no, "bound_at": utc_text(b.bound_at)} for b in bindings
            ],
            "realname": {"status": latest.status if latest else "none"},
        }


class ChallengeRequest(StrictModel):
    """``POST /me/bindings/challenge``."""

    customer_no: CustomerNo


@router.post("/me/bindings/challenge", status_code=202)
async def binding_challenge(
    body: ChallengeRequest, request: Request, parts: Parts
) -> dict[str, object]:
    """Send a code to the phone the utility has on file for the 户号."""
    async with _transaction(parts) as session:
        account = await _me(session, parts, request)
        sent = await parts.bindings(session).challenge(
            body.customer_no, client_ip=_client_ip(request), holder=account.id
        )
    return {"masked_phone": sent.masked_phone, "expires_in": sent.expires_in}


class BindRequest(StrictModel):
    """``POST /me/bindings`` with a code or the service password."""

    customer_no: CustomerNo
    sms_code: Code6 | None = None
    service_password: Annotated[SecretStr, Field(min_length=6, max_length=6)] | None = None


@router.post("/me/bindings", status_code=201)
async def bind(body: BindRequest, request: Request, parts: Parts) -> dict[str, object]:
    """Bind a 户号; the account becomes primary (level 1)."""
    async with _transaction(parts, keep_on_error=True) as session:
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
        return {"customer_no": binding.customer_no, "level": account.level}


@router.delete("/me/bindings/{customer_no}", status_code=204)
async def unbind(customer_no: CustomerNo, request: Request, parts: Parts) -> Response:
    """Unbind one of your 户号."""
    async with _transaction(parts) as session:
        account = await _me(session, parts, request)
        await parts.bindings(session).unbind(account, customer_no)
    return Response(status_code=204)


@router.post("/me/realname", status_code=202)
async def submit_realname(
    request: Request,
    parts: Parts,
    name: Annotated[str, Form(max_length=64)],
    id_number: Annotated[str, Form(max_length=18)],
    id_image: Annotated[UploadFile, File()],
) -> dict[str, str]:
    """Submit name, ID number and ID image for review."""
    image = await id_image.read(parts.max_image_bytes + 1)
    async with _transaction(parts) as session:
        account = await _me(session, parts, request)
        await RealnameService(session, parts.runtime.box, parts.files).submit(
            account, name, id_number, image
        )
    return {"status": "pending"}


@router.get("/me/realname")
async def realname_status(request: Request, parts: Parts) -> dict[str, object]:
    """The state of the newest application (and the reason of a rejection)."""
    async with _transaction(parts) as session:
        account = await _me(session, parts, request)
        latest = await RealnameService(session, parts.runtime.box, parts.files).latest(account.id)
    if latest is None:
        return {"status": "none"}
    answer: dict[str, object] = {"status": latest.status}
    if latest.reason:
        answer["reason"] = latest.reason
    return answer


class SubscriptionModel(BaseModel):
    """One subscription."""

    customer_no: CustomerNo
    topic: Literal["bill", "outage"]
    channel: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_.\-]{0,63}$")]
    enabled: bool = True


class Subscriptions(StrictModel):
    """``GET/PUT /me/subscriptions``."""

    items: Annotated[list[SubscriptionModel], Field(max_length=100)]


@router.get("/me/subscriptions")
async def read_subscriptions(request: Request, parts: Parts) -> Subscriptions:
    """Bill and outage notices per 户号 and channel."""
    async with _transaction(parts) as session:
        account = await _me(session, parts, request)
        items = await parts.bindings(session).subscriptions(account.id)
    return Subscriptions(items=[SubscriptionModel(**asdict(i)) for i in items])


@router.put("/me/subscriptions")
async def replace_subscriptions(
    body: Subscriptions, request: Request, parts: Parts
) -> Subscriptions:
    """Replace the subscriptions (only bound 户号)."""
    async with _transaction(parts) as session:
        account = await _me(session, parts, request)
        items = await parts.bindings(session).replace_subscriptions(
            account.id, [SubscriptionItem(**i.model_dump()) for i in body.items]
        )
    return Subscriptions(items=[SubscriptionModel(**asdict(i)) for i in items])


def _menu_item(code: str, name: str, need: int, level: int) -> dict[str, Any]:
    item: dict[str, Any] = {"code": code, "name": name, "locked": level < need}
    if level < need:
        item["required_level"] = need  # the app can ask the customer to bind or verify
    return item


@router.get("/me/menus")
async def my_menus(request: Request, parts: Parts) -> dict[str, Any]:
    """The channel's menu tree for the caller, items above their level locked (R10)."""
    channel = _channel(request)
    async with _transaction(parts) as session:
        level = 0
        if request.headers.get("x-gg-account"):
            level = (await _me(session, parts, request)).level
        menus = list(
            await session.scalars(
                select(MenuRow)
                .join(Channel, MenuRow.channel)
                .where(Channel.code == channel, MenuRow.enabled.is_(True))
                .order_by(MenuRow.position, MenuRow.code)
            )
        )
        functions = list(
            await session.scalars(
                select(FunctionRow)
                .where(FunctionRow.menu_id.in_([m.id for m in menus]))
                .order_by(FunctionRow.code)
            )
        )
    by_parent: dict[int | None, list[MenuRow]] = {}
    for menu in menus:
        by_parent.setdefault(menu.parent_id, []).append(menu)

    def tree(parent: int | None, inherited: int) -> list[dict[str, Any]]:
        items = []
        for menu in by_parent.get(parent, []):
            need = max(inherited, menu.min_level)
            item = _menu_item(menu.code, menu.name, need, level)
            item["functions"] = [
                _menu_item(f.code, f.name, max(need, f.min_level), level)
                for f in functions
                if f.menu_id == menu.id
            ]
            item["children"] = tree(menu.id, need)
            items.append(item)
        return items

    return {"channel": channel, "level": level, "items": tree(None, 0)}
