"""Request/response building blocks shared by every domain's ``schemas.py``."""

from __future__ import annotations

from typing import Annotated, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

__all__ = ["Code", "Description", "Level", "Name", "Page", "StrictModel"]

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


class StrictModel(BaseModel):
    """A request body: unknown fields are refused, never silently ignored."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class Page(BaseModel, Generic[T]):
    """One page of a list (api.md: ``items``, ``total``, ``page``, ``page_size``)."""

    items: list[T]
    total: int
    page: int
    page_size: int
