"""Request and response models of the accounts service: channel-facing and back office.

Numbers are ASCII digits only (``[0-9]``, never ``\\d``, which also takes Arabic-Indic and
full-width digits). Request bodies are :class:`~gridgate.schemas.StrictModel`: unknown fields
and control characters are refused.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Final, Literal

from pydantic import AfterValidator, BaseModel, Field, SecretStr, StringConstraints
from pydantic_core import PydanticCustomError

from gridgate.schemas import StrictModel

__all__ = [
    "MAX_ATTRIBUTES",
    "MAX_ATTRIBUTE_TEXT",
    "AccountSummaryOut",
    "AccountViewOut",
    "ApplicationOut",
    "ApplicationsOut",
    "BindRequest",
    "BoundOut",
    "ChallengeOut",
    "ChallengeRequest",
    "ChannelUserId",
    "Code6",
    "CustomerNo",
    "EmailAddress",
    "MeOut",
    "MenuItemOut",
    "MenusOut",
    "Password",
    "Phone",
    "ProfileOut",
    "ProfileUpdate",
    "RealnameStatusOut",
    "RegisterRequest",
    "RegisteredOut",
    "Rejection",
    "SmsRequest",
    "SmsSentOut",
    "SubscriptionModel",
    "Subscriptions",
    "SubscriptionsOut",
    "TokenOut",
    "TokenRequest",
    "Username",
    "normalize_email",
]

Phone = Annotated[str, StringConstraints(pattern=r"^1[3-9][0-9]{9}$")]
Code6 = Annotated[str, StringConstraints(pattern=r"^[0-9]{6}$")]
Password = Annotated[SecretStr, Field(min_length=8, max_length=128)]
CustomerNo = Annotated[str, StringConstraints(pattern=r"^[0-9]{10}$")]
ChannelUserId = Annotated[str, StringConstraints(min_length=1, max_length=128)]

#: Extensible attributes (账户属性): at most this many per account …
MAX_ATTRIBUTES: Final = 32
#: … and text values of at most this many characters.
MAX_ATTRIBUTE_TEXT: Final = 256

# -- user names and e-mail addresses -----------------------------------------------------------

#: Names a customer cannot take: they would pass for the utility's own staff or for the system.
RESERVED_USERNAMES: Final = frozenset(
    {
        "admin",
        "administrator",
        "gridgate",
        "official",
        "root",
        "service",
        "sgcc",
        "support",
        "system",
    }
)


def _username(value: str) -> str:
    name = value.lower()
    if name in RESERVED_USERNAMES:
        raise PydanticCustomError("username_reserved", "this user name is reserved")
    return name


#: A user name (用户名): a letter, then 2–31 letters, digits, ``_ . -``. User names are
#: case-insensitive: kept and compared in lower case.
Username = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9_.\-]{2,31}$"),
    AfterValidator(_username),
]

# RFC 5322 dot-atom local part (no quoted strings, no comments) and an RFC 1035 host name of
# two or more labels whose last is letters or an IDNA A-label: what mail systems deliver to.
_ATEXT: Final = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_LOCAL: Final = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)*")
_LABEL: Final = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_TOP_LABEL: Final = re.compile(r"[A-Za-z]{2,63}|[Xx][Nn]--[A-Za-z0-9-]{1,59}")
_MAX_EMAIL, _MAX_LOCAL, _MAX_DOMAIN = 254, 64, 253


def normalize_email(value: str) -> str:
    """``value`` as stored: the local part as typed, the domain in lower case; else ValueError.

    The messages never repeat the address: they end up in answers, and it is personal data.
    """
    if len(value) > _MAX_EMAIL:
        raise ValueError(f"an e-mail address has at most {_MAX_EMAIL} characters")
    local, at, domain = value.rpartition("@")
    if not at or not local or not domain:
        raise ValueError("an e-mail address is local-part@domain")
    if not value.isascii():
        raise ValueError("an e-mail address is ASCII (an international domain in its xn-- form)")
    if len(local) > _MAX_LOCAL or _LOCAL.fullmatch(local) is None:
        raise ValueError(
            "the part before @ is at most 64 letters, digits and !#$%&'*+/=?^_`{|}~- "
            "in dot-separated runs"
        )
    labels = domain.split(".")
    if (
        len(domain) > _MAX_DOMAIN
        or len(labels) < 2
        or not all(_LABEL.fullmatch(label) for label in labels)
        or _TOP_LABEL.fullmatch(labels[-1]) is None
    ):
        raise ValueError("the domain is a host name such as example.com")
    return f"{local}@{domain.lower()}"


def _email(value: str) -> str:
    try:
        return normalize_email(value)
    except ValueError as exc:
        raise PydanticCustomError("email", str(exc)) from None


#: An e-mail address, normalized by :func:`normalize_email`.
EmailAddress = Annotated[str, AfterValidator(_email)]

# -- channel-facing requests -------------------------------------------------------------------


class SmsRequest(StrictModel):
    """``POST /sms/codes``."""

    phone: Phone
    purpose: Literal["register", "login", "bind", "reset_password"]


class SmsSentOut(BaseModel):
    """A code sent: how long it is valid, and when another may be sent."""

    expires_in: int
    resend_after: int


class RegisterRequest(StrictModel):
    """``POST /accounts``."""

    phone: Phone
    sms_code: Code6
    password: Password
    channel_user_id: ChannelUserId | None = None


class RegisteredOut(BaseModel):
    """A new account."""

    account_id: str
    level: int


class TokenRequest(StrictModel):
    """``POST /auth/token`` (password, SMS code or refresh token)."""

    grant_type: Literal["password", "sms_code", "refresh_token"]
    phone: Phone | None = None
    password: Annotated[SecretStr, Field(max_length=128)] | None = None
    sms_code: Code6 | None = None
    refresh_token: Annotated[SecretStr, Field(max_length=256)] | None = None
    channel_user_id: ChannelUserId | None = None


class TokenOut(BaseModel):
    """An access token with its refresh token."""

    access_token: str
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105 - a token type, not a token
    expires_in: int
    refresh_token: str
    level: int


class BindingBrief(BaseModel):
    """A bound 户号 as its owner sees it."""

    customer_no: str
    bound_at: datetime


class RealnameStatusOut(BaseModel):
    """The state of the newest real-name application (``reason`` only for a rejection)."""

    status: Literal["none", "pending", "approved", "rejected"]
    reason: str | None = None


class MeOut(BaseModel):
    """``GET /me``: the caller's account, phone masked."""

    account_id: str
    phone: str
    level: int
    bindings: list[BindingBrief]
    realname: RealnameStatusOut


class ChallengeRequest(StrictModel):
    """``POST /me/bindings/challenge``."""

    customer_no: CustomerNo


class ChallengeOut(BaseModel):
    """Where a binding code went (masked) and how long it is valid."""

    masked_phone: str
    expires_in: int


class BindRequest(StrictModel):
    """``POST /me/bindings`` with a code or the service password."""

    customer_no: CustomerNo
    sms_code: Code6 | None = None
    service_password: Annotated[SecretStr, Field(min_length=6, max_length=6)] | None = None


class BoundOut(BaseModel):
    """A 户号 bound, and the account's level now."""

    customer_no: str
    level: int


class SubscriptionModel(BaseModel):
    """One subscription."""

    customer_no: CustomerNo
    topic: Literal["bill", "outage"]
    channel: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_.\-]{0,63}$")]
    enabled: bool = True


class Subscriptions(StrictModel):
    """``GET/PUT /me/subscriptions``."""

    items: Annotated[list[SubscriptionModel], Field(max_length=100)]


class MenuItemOut(BaseModel):
    """A menu or function of the caller's channel; ``required_level`` only when locked."""

    code: str
    name: str
    locked: bool
    required_level: int | None = None
    functions: list[MenuItemOut] | None = None
    children: list[MenuItemOut] | None = None


class MenusOut(BaseModel):
    """``GET /me/menus``."""

    channel: str
    level: int
    items: list[MenuItemOut]


# -- profile: user name, e-mail address, extensible attributes ---------------------------------

_ATTRIBUTES_SCHEMA: Final = {
    "description": (
        f"JSON merge patch (RFC 7396) of the attributes: names ^[a-z][a-z0-9_]{{0,31}}$, "
        f"values strings of at most {MAX_ATTRIBUTE_TEXT} characters, numbers, booleans; "
        f"null removes; at most {MAX_ATTRIBUTES} attributes in all"
    ),
    "additionalProperties": {"type": ["string", "number", "boolean", "null"]},
}


class ProfileUpdate(StrictModel):
    """A JSON merge patch (RFC 7396) of the profile: what is sent is set, ``null`` removes,
    what is absent stays. ``attributes`` is merged key by key the same way."""

    username: Username | None = None
    email: EmailAddress | None = None
    # Checked key by key by the service (one rule set for customers and operators, and a
    # ``field`` that names the attribute).
    attributes: (
        Annotated[
            dict[str, Any],
            Field(max_length=2 * MAX_ATTRIBUTES, json_schema_extra=_ATTRIBUTES_SCHEMA),
        ]
        | None
    ) = None


class ProfileOut(BaseModel):
    """An account's profile: the owner sees the e-mail address in full, operators masked."""

    account_id: str
    username: str | None
    email: str | None
    level: int
    attributes: dict[str, str | bool | int | float | None]


# -- back office -------------------------------------------------------------------------------


class BindingOut(BaseModel):
    """A bound 户号 with where it is served; the marketing fields when it could be reached."""

    customer_no: str
    bound_at: datetime
    supply_region: str
    meter_book: str
    name: str | None = None
    voltage: str | None = None
    address: str | None = None


class AccountSummaryOut(BaseModel):
    """An account in the back-office search (phone and e-mail address masked)."""

    account_id: str
    phone: str
    username: str | None
    email: str | None
    level: int
    status: str
    created_at: datetime
    bindings: list[BindingOut]


class ChannelAccountOut(BaseModel):
    """A channel identity linked to an account."""

    channel: str
    channel_user_id: str
    created_at: datetime


class RealnameBrief(BaseModel):
    """The state of the newest real-name application."""

    status: str


class ApplicationOut(BaseModel):
    """A real-name application as reviewers see it (name and ID number masked)."""

    id: int
    account_id: str
    status: str
    name: str
    id_number: str
    reason: str | None
    reviewer: str | None
    submitted_at: datetime
    decided_at: datetime | None


class ApplicationsOut(BaseModel):
    """An account's real-name applications, newest first."""

    items: list[ApplicationOut]
    total: int


class SubscriptionsOut(BaseModel):
    """An account's subscriptions."""

    items: list[SubscriptionModel]
    total: int


class AccountViewOut(AccountSummaryOut):
    """The account 360 view (R8, 202): the search's summary and everything else of it."""

    attributes: dict[str, Any]
    channel_accounts: list[ChannelAccountOut]
    realname: RealnameBrief
    uploads: list[ApplicationOut]
    subscriptions: list[SubscriptionModel]


class Rejection(StrictModel):
    """Why an application is rejected (shown to the customer)."""

    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]
