"""Operator, session and audit request/response models."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, SecretStr, StringConstraints

from gridgate.schemas import Name, StrictModel

__all__ = [
    "AuditEventOut",
    "OperatorCreate",
    "OperatorOut",
    "OperatorUpdate",
    "Role",
    "SessionCreate",
    "SessionOut",
]

Role = Literal["admin", "reviewer", "auditor"]
Username = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_.\-]{2,63}$")]
# The rest of what a password must be (12 characters at least, not common, not the user name)
# is the password policy's, so that every refusal answers with one code, auth.weak_password.
OperatorPassword = Annotated[SecretStr, Field(min_length=1, max_length=128)]


class SessionCreate(StrictModel):
    """Operator sign-in."""

    username: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    password: Annotated[SecretStr, Field(min_length=1, max_length=128)]


class SessionOut(BaseModel):
    """A short-lived operator token."""

    access_token: str
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105 - a token type, not a token
    expires_in: int
    roles: list[Role]


class OperatorCreate(StrictModel):
    """A new back-office operator."""

    username: Username
    password: OperatorPassword
    roles: Annotated[list[Role], Field(min_length=1, max_length=3)]
    display_name: Annotated[str, StringConstraints(max_length=128)] = ""


class OperatorUpdate(StrictModel):
    """Changes to an operator; absent fields stay as they are."""

    password: OperatorPassword | None = None
    roles: Annotated[list[Role], Field(min_length=1, max_length=3)] | None = None
    enabled: bool | None = None
    display_name: Name | None = None


class OperatorOut(BaseModel):
    """An operator as shown to admins (never the password hash)."""

    username: str
    display_name: str
    roles: list[Role]
    enabled: bool
    locked_until: datetime | None
    last_login_at: datetime | None
    created_at: datetime
    updated_at: datetime


class AuditEventOut(BaseModel):
    """One entry of the audit trail."""

    id: int
    at: datetime
    actor: str
    action: str
    resource_type: str
    resource_id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    client_ip: str | None
    trace_id: str | None
