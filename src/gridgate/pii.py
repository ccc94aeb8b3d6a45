"""Personal data helpers: ID-card numbers (GB 11643-1999) and masking by kind (脱敏).

Used by real-name review and the back office (accounts) and by the gateway's field rules
(``mask:<kind>``). Each mask keeps only the characters listed here and stars the rest; no mask
ever raises, whatever the value, so a response filter cannot fail on odd backend data.

=============  ===============================================  ==========================
kind           keeps                                            example
=============  ===============================================  ==========================
name           the first character (the surname's first)        张三 → 张*, 欧阳娜娜 → 欧***
phone          first 3 and last 4 of 11 or more characters      138****5678
id_number      first 3 and last 4 of 18 or more characters      330***********1234
customer_no    first 3 and last 3 of 10 or more characters      330****001
bank_card      last 4 of 12 or more characters                  ************1234
email          first character of the local part, the domain    z***@example.com
address        the administrative prefix up to the district     浙江省杭州市西湖区****
=============  ===============================================  ==========================

Shorter phone, ID, customer and card numbers keep at most a quarter of their length at each
end, so at least half of any value stays hidden. Spaces and hyphens inside those numbers are
dropped before masking. Stars replace hidden characters one for one, except in an e-mail's
local part (always ``***``) and after an address prefix (always ``****``), where the length
would say more than the kept part.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone
from typing import Final, overload

__all__ = [
    "MASKS",
    "id_check_char",
    "mask",
    "mask_address",
    "mask_bank_card",
    "mask_customer_no",
    "mask_email",
    "mask_id_number",
    "mask_name",
    "mask_phone",
    "validate_id_number",
]

# ISO 7064 MOD 11-2 as GB 11643 states it: the weighted sum modulo 11 indexes this table.
_ID_WEIGHTS: Final = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK_CHARS: Final = "10X98765432"
_ID_FORMAT: Final = re.compile(r"[0-9]{17}[0-9X]")
_ID_BODY: Final = re.compile(r"[0-9]{17}")
# Birth dates are Beijing dates; China has one time zone and no daylight saving time.
_CHINA: Final = timezone(timedelta(hours=8))

_SEPARATORS: Final = re.compile(r"[\s\-]+")
_CJK: Final = r"[\u3400-\u4dbf\u4e00-\u9fff]"
# Province, prefecture and district (区/县/旗, or a county-level 市), each optional but the last.
# Only CJK ideographs match, so house numbers and Latin text are never part of the prefix.
_ADMIN_PREFIX: Final = re.compile(
    rf"(?:{_CJK}{{1,7}}?(?:省|自治区))?"
    rf"(?:{_CJK}{{1,9}}?(?:市|自治州|州|盟|地区))?"
    rf"{_CJK}{{1,7}}?[区县旗市]"
)
_ADDRESS_FALLBACK: Final = 6
_ADDRESS_TAIL: Final = "****"


def id_check_char(first17: str) -> str:
    """The check character of the resident ID number whose first 17 digits are ``first17``."""
    if _ID_BODY.fullmatch(first17) is None:
        raise ValueError("an ID number starts with 17 digits")
    total = sum(int(digit) * weight for digit, weight in zip(first17, _ID_WEIGHTS, strict=True))
    return _ID_CHECK_CHARS[total % 11]


def validate_id_number(value: str, *, today: date | None = None) -> str:
    """``value`` as a valid 18-character resident ID number with an upper-case X, or ValueError."""
    # The messages never repeat the number: they end up in answers and logs, the number is PII.
    number = value.strip().upper()
    if len(number) != 18:
        raise ValueError("an ID number has 18 characters")
    if _ID_FORMAT.fullmatch(number) is None:
        raise ValueError("an ID number is 17 digits followed by a digit or X")
    try:
        born = date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    except ValueError:
        raise ValueError("the birth date in the ID number is not a valid date") from None
    if born.year < 1900:
        raise ValueError("the birth date in the ID number is before 1900")
    if born > (today or datetime.now(_CHINA).date()):
        raise ValueError("the birth date in the ID number is in the future")
    if id_check_char(number[:17]) != number[17]:
        raise ValueError("the check character of the ID number does not match its digits")
    return number


def _keep_ends(value: str, head: int, tail: int, full_length: int) -> str:
    # Values shorter than the real format keep at most a quarter at each end, so that a
    # truncated number never shows most of itself.
    if len(value) < full_length:
        head, tail = min(head, len(value) // 4), min(tail, len(value) // 4)
    hidden = len(value) - head - tail
    return value[:head] + "*" * hidden + value[len(value) - tail :]


def _compact(value: str) -> str:
    return _SEPARATORS.sub("", value)


def mask_phone(value: str) -> str:
    """A phone number with the first 3 and last 4 characters kept: 138****5678."""
    return _keep_ends(_compact(value), 3, 4, 11)


def mask_id_number(value: str) -> str:
    """An ID-card number with the first 3 and last 4 characters kept: 330***********1234."""
    return _keep_ends(_compact(value), 3, 4, 18)


def mask_customer_no(value: str) -> str:
    """A 户号 with the first 3 and last 3 characters kept: 330****001."""
    return _keep_ends(_compact(value), 3, 3, 10)


def mask_bank_card(value: str) -> str:
    """A bank card number with the last 4 digits kept: ************1234."""
    return _keep_ends(_compact(value), 0, 4, 12)


def mask_name(value: str) -> str:
    """A person's name with its first character kept: 张*, 欧***, Z****."""
    name = value.strip()
    if len(name) <= 1:
        return "*" * len(name)  # a one-character name would be shown whole
    return name[0] + "*" * (len(name) - 1)


def _mask_local_part(local: str) -> str:
    # A one-character local part would be shown whole; a star is not worth keeping, and
    # dropping it keeps masking idempotent (***@x stays ***@x).
    kept = local[0] if len(local) > 1 and local[0] != "*" else ""
    return kept + "***"


def mask_email(value: str) -> str:
    """An e-mail address with the local part's first character and the domain kept."""
    address = value.strip()
    if not address:
        return ""
    local, at, domain = address.rpartition("@")
    if not at:
        return _mask_local_part(address)
    return _mask_local_part(local) + "@" + domain


def mask_address(value: str) -> str:
    """An address with the administrative prefix (to 区/县) kept: 浙江省杭州市西湖区****."""
    address = value.strip()
    if not address:
        return ""
    match = _ADMIN_PREFIX.match(address)
    if match is not None:
        return match.group() + _ADDRESS_TAIL
    # No district found: keep a few leading ideographs, never half the address nor a number.
    limit = min(_ADDRESS_FALLBACK, len(address) // 2)
    kept = re.match(rf"{_CJK}{{0,{limit}}}", address)
    return (kept.group() if kept else "") + _ADDRESS_TAIL


MASKS: Final[dict[str, Callable[[str], str]]] = {
    "name": mask_name,
    "phone": mask_phone,
    "id_number": mask_id_number,
    "address": mask_address,
    "customer_no": mask_customer_no,
    "bank_card": mask_bank_card,
    "email": mask_email,
}


@overload
def mask(kind: str, value: None) -> None: ...
@overload
def mask(kind: str, value: str) -> str: ...
@overload
def mask(kind: str, value: object) -> str | None: ...
def mask(kind: str, value: object) -> str | None:
    """``value`` masked as ``kind`` (a key of :data:`MASKS`); others via ``str``, None stays."""
    try:
        masker = MASKS[kind]
    except KeyError:
        raise ValueError(f"unknown mask kind {kind!r}") from None
    if value is None:
        return None
    return masker(value if isinstance(value, str) else str(value))
