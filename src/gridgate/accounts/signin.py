"""Registration and sign-in as channels call them (R7): the SMS code, the address's count, the
account, and answers that tell nobody who is registered.

Each flow spans more than one store (the code store, the attempt store, the database), so it
runs its own transaction through :meth:`AccountsParts.transaction`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from gridgate.accounts.services import REGISTERED_NOTICE, PhoneRegistered, TokenPair
from gridgate.accounts.sms import SmsCodeInvalid
from gridgate.errors import GridgateError

if TYPE_CHECKING:
    from gridgate.accounts.models import Account
    from gridgate.accounts.parts import AccountsParts

__all__ = ["refresh", "register", "sign_in"]

#: A phone's owner hears at most once a day that someone tried to register it again.
_NOTICE_INTERVAL_S = 86_400


async def register(
    parts: AccountsParts,
    phone: str,
    sms_code: str,
    password: str,
    *,
    channel: str,
    channel_user_id: str | None,
) -> Account:
    """Register with a verified phone; the channel identity is linked when given.

    A phone that has an account answers as a wrong code does, and its owner learns why by
    SMS: the answer tells nobody else whether the phone is registered.
    """
    await parts.sms.verify(phone, "register", sms_code)
    try:
        async with parts.transaction() as session:
            return await parts.accounts(session).register(
                phone, password, channel=channel, channel_user_id=channel_user_id
            )
    except PhoneRegistered:
        parts.notices.send_later(
            phone,
            REGISTERED_NOTICE,
            purpose="register_notice",
            once_per=(f"registered:{phone}", _NOTICE_INTERVAL_S),
        )
        raise SmsCodeInvalid from None


async def refresh(parts: AccountsParts, refresh_token: str, *, channel: str) -> TokenPair:
    """Rotate a refresh token (a reuse revokes its family, and that must stick)."""
    async with parts.transaction(keep_on_error=True) as session:
        return await parts.accounts(session).refresh(refresh_token, channel=channel)


async def sign_in(
    parts: AccountsParts,
    grant: Literal["password", "sms_code"],
    phone: str,
    secret: str,
    *,
    channel: str,
    client_ip: str,
    channel_user_id: str | None,
) -> TokenPair:
    """A password or SMS-code sign-in (``secret`` is the one or the other), counted against
    the client address."""
    # Counted before anything is checked, so that concurrent guesses cannot slip past; given
    # back unless the sign-in failed (a wrong SMS code is bounded by the code's own attempts).
    await parts.login_guard.attempt(client_ip)
    failed = False
    try:
        if grant == "sms_code":
            await parts.sms.verify(phone, "login", secret)
        async with parts.transaction(keep_on_error=True) as session:
            service = parts.accounts(session)
            try:
                if grant == "password":
                    account = await service.authenticate(phone, secret)
                else:
                    found = await service.by_phone(phone)
                    if found is None or found.status != "active":
                        # As a wrong code: sign-in does not tell who is registered.
                        raise SmsCodeInvalid("the code is not valid")
                    account = found
            except GridgateError:
                failed = True
                raise
            if channel_user_id:
                await service.link_channel(account, channel, channel_user_id)
            return await service.start_session(account, channel)
    finally:
        if not failed:
            await parts.login_guard.passed(client_ip)
