"""Account attributes (R7, 201): user name, e-mail address and extensible attributes.

The unified account carries "账户名 … 电子邮箱 … 账户属性支持扩展": the customer reads and
changes them through the channels, operators through the back office (audited). A change is a
JSON merge patch (RFC 7396). The e-mail address is personal data: sealed at rest with a keyed
hash to find it, masked wherever an operator sees it, never logged nor audited.
"""

from __future__ import annotations

import math
import re
from typing import Any, Final

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from gridgate.accounts.models import Account
from gridgate.accounts.schemas import MAX_ATTRIBUTE_TEXT, MAX_ATTRIBUTES, ProfileOut, ProfileUpdate
from gridgate.errors import Conflict, InvalidRequest, NotFound
from gridgate.operators.audit import Actor, record
from gridgate.pii import mask_email
from gridgate.storage.crypto import SecretBox

__all__ = ["EMAIL", "ProfileService", "email_hash", "merge_attributes"]

#: Associated data of sealed e-mail addresses and purpose of their look-up hash.
EMAIL: Final = "account.email"
_NAME: Final = re.compile(r"[a-z][a-z0-9_]{0,31}")
#: Integers beyond this lose precision in JavaScript, which most channel apps are written in.
_MAX_SAFE_INTEGER: Final = 2**53 - 1


def email_hash(box: SecretBox, address: str) -> str:
    """The look-up hash of an e-mail address (normalized), the same whatever its case."""
    return box.lookup_hash(address.lower(), EMAIL)


def _check_value(name: str, value: Any) -> None:
    field = f"attributes.{name}"
    if isinstance(value, bool):
        return
    if isinstance(value, int):
        if abs(value) > _MAX_SAFE_INTEGER:
            raise InvalidRequest("an attribute integer lies within ±(2^53 − 1)", field=field)
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidRequest("an attribute number is finite", field=field)
        return
    if isinstance(value, str):
        if len(value) > MAX_ATTRIBUTE_TEXT:
            raise InvalidRequest(
                f"an attribute text has at most {MAX_ATTRIBUTE_TEXT} characters", field=field
            )
        return
    raise InvalidRequest(
        "an attribute value is a string, a number, true or false (null removes it)", field=field
    )


def merge_attributes(current: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """``current`` merged with ``patch`` as RFC 7396 says: a value sets, ``null`` removes.

    Attributes are flat: names ``^[a-z][a-z0-9_]{0,31}$``, values strings, numbers or booleans,
    at most :data:`MAX_ATTRIBUTES` of them after the merge. InvalidRequest names the field.
    """
    merged = dict(current)
    for name, value in patch.items():
        if _NAME.fullmatch(name) is None:
            raise InvalidRequest(
                "an attribute name is a lower-case letter, then up to 31 lower-case letters, "
                "digits or _",
                field=f"attributes.{name}",
            )
        if value is None:
            merged.pop(name, None)
            continue
        _check_value(name, value)
        merged[name] = value
    if len(merged) > MAX_ATTRIBUTES:
        raise InvalidRequest(
            f"an account has at most {MAX_ATTRIBUTES} attributes", field="attributes"
        )
    return merged


class ProfileService:
    """Reads and changes account profiles inside the caller's transaction."""

    def __init__(self, session: AsyncSession, box: SecretBox) -> None:
        self.session = session
        self.box = box

    def email_of(self, account: Account) -> str | None:
        """The account's e-mail address in clear, if it has one."""
        return self.box.open(account.email_sealed, EMAIL) if account.email_sealed else None

    def profile(self, account: Account, *, masked: bool = False) -> ProfileOut:
        """The profile as its owner sees it, or ``masked`` for operators."""
        email = self.email_of(account)
        return ProfileOut(
            account_id=account.id,
            username=account.username,
            email=mask_email(email) if masked and email is not None else email,
            level=account.level,
            attributes=dict(account.attributes or {}),
        )

    async def _account(self, account_id: str) -> Account:
        account = await self.session.get(Account, account_id)
        if account is None:
            raise NotFound("no such account")
        return account

    async def read(self, account_id: str) -> ProfileOut:
        """An account's profile for operators (e-mail address masked)."""
        return self.profile(await self._account(account_id), masked=True)

    async def update(self, account: Account, change: ProfileUpdate) -> list[str]:
        """Apply the merge patch ``change``; the names of what changed (``attributes.<name>``).

        User names are unique whatever the case: one taken by another account is a 409 with
        ``field: "username"``, also when a concurrent change took it first.
        """
        sent = change.model_fields_set
        changed: list[str] = []
        if "username" in sent and change.username != account.username:
            if change.username is not None and await self._taken(change.username, account.id):
                raise Conflict("this user name is taken", field="username")
            account.username = change.username
            changed.append("username")
        if "email" in sent and change.email != self.email_of(account):
            if change.email is None:
                account.email_sealed = account.email_hash = None
            else:
                account.email_sealed = self.box.seal(change.email, EMAIL)
                account.email_hash = email_hash(self.box, change.email)
            changed.append("email")
        if "attributes" in sent:
            current = dict(account.attributes or {})
            # RFC 7396: ``null`` removes the member, here every attribute.
            merged = (
                {} if change.attributes is None else merge_attributes(current, change.attributes)
            )
            changed += [
                f"attributes.{name}"
                for name in sorted(current.keys() | merged.keys())
                if _typed(current, name) != _typed(merged, name)
            ]
            account.attributes = merged  # a new object: the ORM sees the JSON column change
        try:
            await self.session.flush()
        except IntegrityError:
            # Another account took the user name between the check and the write.
            raise Conflict("this user name is taken", field="username") from None
        return changed

    async def update_by_operator(
        self, account_id: str, change: ProfileUpdate, actor: Actor
    ) -> ProfileOut:
        """An operator's change, audited with the names of what changed but no personal data
        (neither the e-mail address nor attribute values, which may be personal too)."""
        account = await self._account(account_id)
        before = _audit_view(account)
        changed = await self.update(account, change)
        if changed:
            await record(
                self.session,
                actor,
                "account.update",
                "account",
                account.id,
                before=before,
                after={**_audit_view(account), "changed": changed},
            )
        return self.profile(account, masked=True)

    async def _taken(self, username: str, account_id: str) -> bool:
        owner = await self.session.scalar(
            select(Account.id).where(Account.username == username, Account.id != account_id)
        )
        return owner is not None


def _typed(attributes: dict[str, Any], name: str) -> tuple[type, Any] | None:
    # With its type: 1, 1.0 and true are equal in Python but three values in JSON.
    return (type(attributes[name]), attributes[name]) if name in attributes else None


def _audit_view(account: Account) -> dict[str, Any]:
    # The user name is the customer's public handle; whether there is an e-mail address and
    # which attributes exist say what changed without saying anything about the person.
    return {
        "username": account.username,
        "email": "set" if account.email_sealed else None,
        "attributes": sorted((account.attributes or {}).keys()),
    }
