"""Request/response building blocks shared by every domain's ``schemas.py``."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Generic, TypeVar

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)
from pydantic_core import PydanticCustomError

__all__ = [
    "Code",
    "Description",
    "Level",
    "Name",
    "Page",
    "Rfc3339Time",
    "StrictModel",
    "utc_text",
]

T = TypeVar("T")

#: A stable identifier: lower-case letter first, then letters, digits, ``_ . -``.
Code = Annotated[
    str, StringConstraints(pattern=r"^[a-z][a-z0-9_.\-]{0,63}$", min_length=1, max_length=64)
]
#: A display name.
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=128)]
Description = Annotated[str, StringConstraints(max_length=2000)]
#: 认证等级: 0 registered, 1 primary (户号 bound), 2 advanced (real-name approved).
Level = Annotated[int, Field(ge=0, le=2)]

#: RFC 3339 ``date-time`` (section 5.6), ASCII digits only: ``T`` between date and time, seconds,
#: and a zone (``Z`` or ``±hh:mm``). Lower-case ``t``/``z`` are allowed, as the RFC allows.
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,9})?"
    r"(?:[Zz]|[+-][0-9]{2}:[0-9]{2})"
)


def _rfc3339(value: Any) -> Any:
    if isinstance(value, datetime):
        return value  # built in code, not read from a request
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        raise PydanticCustomError(
            "rfc3339",
            "must be an RFC 3339 time with a time zone, such as 2026-11-22T04:27:08Z",
        )
    return value


#: A time the API promises as RFC 3339. pydantic's own datetime also takes Unix timestamps,
#: bare dates, a space for ``T`` and ``+0800``; this refuses them before pydantic parses.
Rfc3339Time = Annotated[AwareDatetime, BeforeValidator(_rfc3339)]


def utc_text(value: datetime) -> str:
    """A time as every answer writes it: RFC 3339 in UTC with ``Z``, as pydantic writes
    ``datetime`` fields (``isoformat()`` would write ``+00:00``, and no zone for a naive time)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)  # the database keeps UTC; SQLite forgets the zone
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _no_control_characters(value: Any, path: str = "") -> None:
    if isinstance(value, str):
        if _CONTROL.search(value):
            raise PydanticCustomError(
                "control_character",
                "control characters are not allowed{where}",
                {"where": f" (in {path})" if path else ""},
            )
    elif isinstance(value, dict):
        for key, item in value.items():
            _no_control_characters(key, path)
            _no_control_characters(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _no_control_characters(item, f"{path}.{index}" if path else str(index))


class StrictModel(BaseModel):
    """A request body: unknown fields are refused, never silently ignored, and text carries
    no control characters (PostgreSQL refuses NUL, and none belongs in a name or code)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)

    @model_validator(mode="before")
    @classmethod
    def _clean_text(cls, data: Any) -> Any:
        _no_control_characters(data)
        return data


class Page(BaseModel, Generic[T]):
    """One page of a list (api.md: ``items``, ``total``, ``page``, ``page_size``)."""

    items: list[T]
    total: int
    page: int
    page_size: int
