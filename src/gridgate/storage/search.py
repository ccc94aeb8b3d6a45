"""Text search in SQL: what an operator types matches literally, wildcards included."""

from __future__ import annotations

from sqlalchemy import ColumnElement
from sqlalchemy.orm import QueryableAttribute

__all__ = ["LIKE_ESCAPE", "contains_text", "escape_like"]

#: The escape character of every LIKE gridgate builds (declared with ``ESCAPE``: PostgreSQL
#: and SQLite agree only when it is explicit).
LIKE_ESCAPE = "\\"


def escape_like(text: str) -> str:
    """``text`` with LIKE's wildcards ``%`` and ``_``, and the escape character, escaped."""
    return (
        text.replace(LIKE_ESCAPE, LIKE_ESCAPE * 2)
        .replace("%", LIKE_ESCAPE + "%")
        .replace("_", LIKE_ESCAPE + "_")
    )


def contains_text(
    column: ColumnElement[str] | QueryableAttribute[str], text: str
) -> ColumnElement[bool]:
    """``column`` contains ``text`` as typed: ``50%`` finds ``50%``, not ``50`` and anything."""
    return column.like(f"%{escape_like(text)}%", escape=LIKE_ESCAPE)
