"""Catalog request/response models with their validation rules.

Every rule that a single value can break lives here, so a bad value is answered 422 with the
field named; rules that need the database (unique codes, references) live in the services.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import datetime
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    Field,
    SecretStr,
    StringConstraints,
)
from pydantic_core import PydanticCustomError

from gridgate.catalog.paths import PathTemplate
from gridgate.schemas import Code, Description, Level, Name, StrictModel

__all__ = [
    "Authorizations",
    "BusinessSystemCreate",
    "BusinessSystemCreated",
    "BusinessSystemOut",
    "BusinessSystemUpdate",
    "ChannelCreate",
    "ChannelOut",
    "ChannelType",
    "ChannelUpdate",
    "ChannelWithSecret",
    "ComponentCreate",
    "ComponentOut",
    "ComponentUpdate",
    "InterfaceCreate",
    "InterfaceOut",
    "InterfaceUpdate",
]

ChannelType = Literal["app", "wechat", "web", "partner", "other"]
HttpMethod = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]
ServiceMode = Literal["sync", "async"]

_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9\-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9\-]{0,61}[A-Za-z0-9])?)*$"
)
MAX_ALLOWED_NETWORKS = 256
#: Bounds of an interface timeout: long enough for a slow back end, short enough to free the queue.
MIN_TIMEOUT_MS, MAX_TIMEOUT_MS = 50, 120_000


def _host(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        pass
    if not _HOSTNAME.match(value):
        raise ValueError("must be an IP address or a DNS host name")
    return value.lower()


def _network(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address or CIDR network") from None


def _path_template(value: str) -> str:
    PathTemplate.parse(value)  # raises PathTemplateError (a ValueError) with the reason
    return value


Host = Annotated[str, StringConstraints(min_length=1, max_length=253), AfterValidator(_host)]
Port = Annotated[int, Field(ge=1, le=65535)]
Network = Annotated[str, StringConstraints(min_length=1, max_length=64), AfterValidator(_network)]
Networks = Annotated[list[Network], Field(max_length=MAX_ALLOWED_NETWORKS)]
PathTemplateStr = Annotated[
    str, StringConstraints(min_length=1, max_length=512), AfterValidator(_path_template)
]
ServiceName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_.\-]{0,127}$")]
Version = Annotated[str, StringConstraints(pattern=r"^[0-9A-Za-z][0-9A-Za-z.\-]{0,31}$")]
TimeoutMs = Annotated[int, Field(ge=MIN_TIMEOUT_MS, le=MAX_TIMEOUT_MS)]
SystemUsername = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.@\-]{1,64}$")]
SystemPassword = Annotated[SecretStr, Field(min_length=8, max_length=128)]
Kind = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,31}$")]
RatePerSecond = Annotated[int, Field(ge=1, le=1_000_000)]
Concurrency = Annotated[int, Field(ge=1, le=100_000)]
QueueLength = Annotated[int, Field(ge=0, le=100_000)]
WaitMs = Annotated[int, Field(ge=0, le=60_000)]
CustomerScope = Annotated[str, StringConstraints(pattern=r"^(path|body):[a-z_][a-z0-9_]{0,63}$")]
BalancerName = Literal["round_robin", "weighted_random", "least_in_flight", "consistent_hash"]
#: Per cent of an interface's calls its canary instances take (灰度比例).
CanaryPercent = Annotated[int, Field(ge=0, le=100)]


def _removed_port(value: object) -> None:
    raise PydanticCustomError(
        "removed",
        "a channel's port is no longer part of the catalog: the gateway never enforced it "
        "(docs/decisions.md, 'A channel has no port')",
    )


#: A field removed from the API: any value, ``null`` included, is a 422 naming it.
RemovedPort = Annotated[
    None,
    BeforeValidator(_removed_port),
    Field(
        exclude=True,
        deprecated=True,
        description="Removed: sending it is a 422 (docs/decisions.md).",
    ),
]


# -- business systems (R3) ----------------------------------------------------------------


class BusinessSystemCreate(StrictModel):
    """A business system to register; a password is generated when none is given."""

    code: Code
    name: Name
    host: Host
    port: Port
    username: SystemUsername | None = None
    password: SystemPassword | None = None
    description: Description = ""


class BusinessSystemUpdate(StrictModel):
    """Changes to a business system; absent fields stay."""

    name: Name | None = None
    host: Host | None = None
    port: Port | None = None
    username: SystemUsername | None = None
    password: SystemPassword | None = None
    description: Description | None = None


class BusinessSystemOut(BaseModel):
    """A business system as shown to operators: never its password."""

    code: str
    name: str
    host: str
    port: int
    username: str
    description: str
    created_at: datetime
    updated_at: datetime


class BusinessSystemCreated(BusinessSystemOut):
    """The answer to a creation; ``password`` only when gridgate generated it (shown once)."""

    password: str | None = None


# -- channels (R4) -------------------------------------------------------------------------


class ChannelCreate(StrictModel):
    """A channel to register; its signing secret is generated and shown once."""

    code: Code
    name: Name
    type: ChannelType
    allowed_ips: Networks = Field(default_factory=list)
    enabled: bool = True
    description: Description = ""
    rate_limit_per_s: RatePerSecond | None = None
    port: RemovedPort = None


class ChannelUpdate(StrictModel):
    """Changes to a channel; the secret changes only through rotation."""

    name: Name | None = None
    type: ChannelType | None = None
    allowed_ips: Networks | None = None
    enabled: bool | None = None
    description: Description | None = None
    rate_limit_per_s: RatePerSecond | None = None
    port: RemovedPort = None


class ChannelOut(BaseModel):
    """A channel as shown to operators: never its secret."""

    code: str
    name: str
    type: ChannelType
    allowed_ips: list[str]
    enabled: bool
    description: str
    rate_limit_per_s: int | None
    secret_rotated_at: datetime
    created_at: datetime
    updated_at: datetime


class ChannelWithSecret(ChannelOut):
    """Creation and rotation answers: the signing secret, shown this once only."""

    secret: str


# -- interfaces (R5) -----------------------------------------------------------------------


class InterfaceCreate(StrictModel):
    """A business interface to register."""

    code: Code
    name: Name
    method: HttpMethod
    path: PathTemplateStr
    service_mode: ServiceMode = "sync"
    version: Version = "1"
    canary_version: Version | None = None
    canary_percent: CanaryPercent = 0
    timeout_ms: TimeoutMs = 3000
    provider: Code
    target_service: ServiceName
    enabled: bool = True
    requires_client_auth: bool = True
    min_level: Level = 0
    idempotent: bool | None = Field(
        default=None, description="Safe to retry; defaults to true for GET, false otherwise."
    )
    description: Description = ""
    rate_limit_per_s: RatePerSecond | None = None
    max_concurrency: Concurrency | None = None
    max_queue: QueueLength = 100
    max_wait_ms: WaitMs = 1000
    client_rate_limit_per_s: RatePerSecond | None = None
    account_rate_limit_per_s: RatePerSecond | None = None
    balancer: BalancerName = "round_robin"
    customer_scope: CustomerScope | None = None


class InterfaceUpdate(StrictModel):
    """Changes to an interface; absent fields stay."""

    name: Name | None = None
    method: HttpMethod | None = None
    path: PathTemplateStr | None = None
    service_mode: ServiceMode | None = None
    version: Version | None = None
    canary_version: Version | None = None
    canary_percent: CanaryPercent | None = None
    timeout_ms: TimeoutMs | None = None
    provider: Code | None = None
    target_service: ServiceName | None = None
    enabled: bool | None = None
    requires_client_auth: bool | None = None
    min_level: Level | None = None
    idempotent: bool | None = None
    description: Description | None = None
    rate_limit_per_s: RatePerSecond | None = None
    max_concurrency: Concurrency | None = None
    max_queue: QueueLength | None = None
    max_wait_ms: WaitMs | None = None
    client_rate_limit_per_s: RatePerSecond | None = None
    account_rate_limit_per_s: RatePerSecond | None = None
    balancer: BalancerName | None = None
    customer_scope: CustomerScope | None = None


class Authorizations(StrictModel):
    """Which channels and which business systems may call an interface (replaced as a whole)."""

    channels: Annotated[list[Code], Field(max_length=1000)] = Field(default_factory=list)
    business_systems: Annotated[list[Code], Field(max_length=1000)] = Field(default_factory=list)


class InterfaceOut(BaseModel):
    """An interface with its authorizations."""

    code: str
    name: str
    method: HttpMethod
    path: str
    service_mode: ServiceMode
    version: str
    canary_version: str | None
    canary_percent: int
    timeout_ms: int
    provider: str
    target_service: str
    enabled: bool
    requires_client_auth: bool
    min_level: int
    idempotent: bool
    description: str
    rate_limit_per_s: int | None
    max_concurrency: int | None
    max_queue: int
    max_wait_ms: int
    client_rate_limit_per_s: int | None
    account_rate_limit_per_s: int | None
    balancer: BalancerName
    customer_scope: str | None
    authorizations: Authorizations
    created_at: datetime
    updated_at: datetime


# -- components (R6) -----------------------------------------------------------------------


class ComponentCreate(StrictModel):
    """A function a channel exposes (bill query, payment, real-name …) and its level."""

    channel: Code
    code: Code
    name: Name
    kind: Kind = "function"
    min_level: Level = 0
    enabled: bool = True
    description: Description = ""


class ComponentUpdate(StrictModel):
    """Changes to a component; its channel and code stay."""

    name: Name | None = None
    kind: Kind | None = None
    min_level: Level | None = None
    enabled: bool | None = None
    description: Description | None = None


class ComponentOut(BaseModel):
    """A channel component."""

    id: int
    channel: str
    code: str
    name: str
    kind: str
    min_level: int
    enabled: bool
    description: str
    created_at: datetime
    updated_at: datetime
