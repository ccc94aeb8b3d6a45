"""One settings object, read once at start from ``GRIDGATE_*`` variables and an optional TOML file.

Precedence, highest first: values passed by the command line, environment variables, the TOML
file named by ``--config`` or ``GRIDGATE_CONFIG``, defaults. Secrets are ``SecretStr`` so they
never appear in a repr or a log line; URLs are shown with their password masked.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import os
import secrets
import tomllib
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from gridgate.errors import ConfigurationError

__all__ = ["Settings", "load_settings", "mask_url"]

#: The parsed ``--config`` file while :func:`load_settings` builds the settings.
_CONFIG_FILE: ContextVar[dict[str, Any] | None] = ContextVar("gridgate_config_file", default=None)

#: Bytes of key material a production secret must carry at least (256 bits).
MIN_SECRET_BYTES = 32
_DEV_KEYS_FILE = "keys.json"
#: The database drivers gridgate is installed with (both asynchronous).
_DATABASE_SCHEMES = ("postgresql+asyncpg:", "sqlite+aiosqlite:")
_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def mask_url(url: str | None) -> str | None:
    """Return ``url`` with any password replaced by ``***`` (for logs and reprs)."""
    if not url:
        return url
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def decode_key(value: str) -> bytes:
    """Decode a base64 (standard or URL-safe, padding optional) 256-bit key."""
    text = value.strip()
    padded = text + "=" * (-len(text) % 4)
    try:
        raw = base64.urlsafe_b64decode(padded.replace("+", "-").replace("/", "_"))
    except (binascii.Error, ValueError) as exc:
        raise ValueError("not valid base64") from exc
    if len(raw) != MIN_SECRET_BYTES:
        raise ValueError(f"must decode to {MIN_SECRET_BYTES} bytes, got {len(raw)}")
    return raw


def new_key() -> str:
    """A fresh random 256-bit key in URL-safe base64."""
    return base64.urlsafe_b64encode(secrets.token_bytes(MIN_SECRET_BYTES)).decode().rstrip("=")


class Settings(BaseSettings):
    """Everything gridgate can be told; see docs/configuration.md for each field."""

    model_config = SettingsConfigDict(
        env_prefix="GRIDGATE_",
        extra="forbid",
        validate_default=True,
        frozen=True,
    )

    env: Literal["development", "production"] = "development"
    data_dir: Path = Path("gridgate-data")
    database_url: str | None = None
    redis_url: str | None = None
    nats_url: str | None = None
    registry_urls: Annotated[list[str], NoDecode] = Field(default_factory=list)

    bind_host: str = "127.0.0.1"
    #: ``gridgate up`` binds only the gateway to ``bind_host``: the admin listener is for
    #: operators and stays here unless told otherwise (``--admin-host``).
    admin_bind_host: str = "127.0.0.1"
    #: ``gridgate up``: where the listeners only the platform calls bind (registry, accounts,
    #: demo business systems), never the channel-facing address by default (``--internal-host``).
    internal_bind_host: str = "127.0.0.1"
    gateway_port: int = Field(8080, ge=0, le=65535)
    admin_port: int = Field(8090, ge=0, le=65535)
    registry_port: int = Field(8070, ge=0, le=65535)
    accounts_port: int = Field(8060, ge=0, le=65535)
    logs_port: int = Field(8050, ge=0, le=65535)

    secret_key: SecretStr | None = None
    data_key: SecretStr | None = None
    previous_data_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    #: Keys the look-up hashes of phones and ID numbers; unlike data_key it is never rotated.
    lookup_key: SecretStr | None = None

    #: Bearer token that lets gateways and tools read the service center (writes use the
    #: business system's own credentials from the catalog).
    registry_token: SecretStr | None = None
    #: The URL other nodes and clients should use for this registry node (default: bind address).
    registry_advertise_url: str | None = None
    #: The password a demo business system (``gridgate serve demo-<system>``) registers with;
    #: unset, it is read from ``DATA_DIR/demo.json``.
    business_system_password: SecretStr | None = None
    registry_heartbeat_s: float = Field(5.0, gt=0, le=60)
    registry_unhealthy_s: float = Field(15.0, gt=0, le=600)
    registry_remove_s: float = Field(30.0, gt=0, le=3600)

    #: Large enough for a real-name ID image (5 MiB) and the form around it.
    gateway_max_body_bytes: int = Field(6 * 1_048_576, ge=1024, le=64 * 1_048_576)
    #: All interfaces together: calls in flight, and the wait queue in front of them (R12).
    gateway_max_concurrency: int = Field(2000, ge=1, le=1_000_000)
    gateway_max_queue: int = Field(2000, ge=0, le=1_000_000)
    gateway_max_wait_ms: int = Field(2000, ge=0, le=60_000)
    #: Requests per second of one client address, and of one account, on each interface whose
    #: catalog entry sets no ``client_rate_limit_per_s`` / ``account_rate_limit_per_s``. Unset:
    #: no such limit. Off by default: carrier NAT puts many customers behind one address.
    gateway_client_rate_limit_per_s: int | None = Field(None, ge=1, le=1_000_000)
    gateway_account_rate_limit_per_s: int | None = Field(None, ge=1, le=1_000_000)
    #: Nonces one gateway process remembers without Redis; when full, new signed requests are
    #: refused (503 ``flow.overloaded``) rather than old nonces forgotten (a replay would pass).
    gateway_max_nonces: int = Field(1_000_000, ge=1000, le=100_000_000)
    #: Peers whose ``X-Forwarded-For`` the gateway believes (a load balancer in front of it);
    #: the client address is then the last hop before them. Loopback by default, as uvicorn.
    gateway_trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["127.0.0.1", "::1"]
    )
    #: Where the accounts service publishes its signing keys (JWKS) for customer tokens;
    #: unset, interfaces above level 0 cannot be called through this gateway.
    accounts_jwks_url: str | None = None
    token_issuer: str = "gridgate-accounts"  # noqa: S105 - an issuer name, not a secret
    token_audience: str = "gridgate"  # noqa: S105 - an audience name, not a secret
    #: The longest ``exp − iat`` of a customer token the gateway accepts: the accounts service
    #: issues 900 s tokens; the margin spares a clock step. A longer-lived token is refused.
    token_max_lifetime_s: int = Field(960, ge=60, le=86_400)
    #: How far (seconds) an ``X-GG-Internal`` timestamp may be from a service's clock, either
    #: way: the gateway signs before it queues and retries, so allow for those too.
    internal_auth_max_skew_s: int = Field(60, ge=5, le=300)

    #: Where the log pipeline keeps its Parquet files: a directory, or any URL pyarrow's
    #: filesystems open (``s3://bucket/gridgate-logs``). Several gateway nodes must share one
    #: so that the hourly analysis sees every node's records. Default: DATA_DIR/logs.
    log_storage_url: str | None = None
    #: Days the Parquet log files (every request, with account ids and client addresses) are
    #: kept; 0 keeps them forever. 180: the six months China's Cybersecurity Law (art. 21)
    #: asks network logs to be kept, and no longer, since they hold personal data.
    log_retention_days: int = Field(180, ge=0, le=36_500)
    #: Days the hourly traffic and error rows and the account trajectories are kept; 0 keeps
    #: them forever. 400: a year back plus a month, for year-on-year comparisons. Must be 0 or
    #: at least ``log_retention_days`` (an hour's rows are computed from its files).
    analysis_retention_days: int = Field(400, ge=0, le=36_500)
    #: How old (seconds) the oldest access-log record waiting in the Redis stream may be before
    #: the gateway's ``/readyz`` reports ``log_pipeline: warning`` (no ``serve logs`` running,
    #: or it is behind); the gateway stays ready.
    log_lag_warning_s: float = Field(120.0, gt=0)
    #: Above this age ``log_pipeline`` fails the gateway's readiness. Unset (the default): never,
    #: since the gateway answers customers without its log pipeline.
    log_lag_fail_s: float | None = Field(None, gt=0)
    #: ``console`` (development: DATA_DIR/sms-outbox.jsonl) or ``http`` (a real SMS gateway).
    sms_provider: Literal["console", "http"] = "console"
    sms_http_url: str | None = None
    sms_http_token: SecretStr | None = None
    sms_template: str = "【网上国网】验证码 {code}，{minutes} 分钟内有效，请勿告诉他人。"
    #: Whether one 户号 may be bound to several accounts (family members, a landlord …).
    accounts_allow_shared_binding: bool = True
    #: Wrong service passwords (across all 户号) one account, and one device (sign-in
    #: session), may give before each further try waits; and the same for one client address
    #: (higher: carrier NAT puts many customers behind one address).
    accounts_binding_free_failures: int = Field(5, ge=1, le=100)
    accounts_binding_free_failures_per_address: int = Field(20, ge=1, le=10_000)
    #: The first wait after the free failures; it doubles per further failure up to the cap.
    accounts_binding_backoff_base_s: int = Field(60, ge=1, le=3600)
    accounts_binding_backoff_cap_s: int = Field(3600, ge=1, le=86_400)
    #: Failures are forgotten this long after the last one.
    accounts_binding_failure_window_s: int = Field(86_400, ge=60, le=30 * 86_400)
    #: At most one SMS per 户号 about failed service-password bindings in this time.
    accounts_binding_notice_interval_s: int = Field(86_400, ge=60, le=30 * 86_400)

    operator_token_ttl_s: int = Field(900, ge=60, le=86_400)
    #: Operator sign-in: failed sign-ins for one user name (known or not) that pass; then each
    #: further one waits ``operator_lockout_s`` after the last, doubling per failure up to 16
    #: times that; failures are forgotten a day after the last.
    operator_lockout_threshold: int = Field(10, ge=3, le=100)
    operator_lockout_s: int = Field(900, ge=60, le=3600)
    #: The same per client address (IPv6: its /64), whatever names it tries.
    operator_address_lockout_threshold: int = Field(20, ge=3, le=1000)
    operator_address_lockout_s: int = Field(60, ge=10, le=3600)
    admin_max_body_bytes: int = Field(1_048_576, ge=1024, le=64 * 1_048_576)
    shutdown_timeout_s: float = Field(3.0, gt=0, le=60)

    #: Connections each listener keeps open at once, and that one client address (an IPv6
    #: /64) may hold on it; beyond them a new connection is closed at once. ``internal``: the
    #: registry, accounts, logs and demo listeners. The caps are lowered at start when they
    #: would not fit the process's descriptor limit (less ``descriptor_reserve``).
    gateway_max_connections: int = Field(16_384, ge=16, le=10_000_000)
    gateway_max_connections_per_address: int = Field(256, ge=1, le=10_000_000)
    admin_max_connections: int = Field(256, ge=16, le=10_000_000)
    admin_max_connections_per_address: int = Field(64, ge=1, le=10_000_000)
    #: The gateway's upstream pool opens up to 256 connections to each instance it calls.
    internal_max_connections: int = Field(1024, ge=16, le=10_000_000)
    internal_max_connections_per_address: int = Field(512, ge=1, le=10_000_000)
    #: Descriptors kept free for upstream connections, the database, Redis and files.
    descriptor_reserve: int = Field(4096, ge=64, le=10_000_000)
    #: A new connection must send a request's first byte within this time; a request's head
    #: must arrive within ``request_head_timeout_s`` of its first byte (408 otherwise).
    connection_first_byte_timeout_s: float = Field(10.0, gt=0, le=300)
    request_head_timeout_s: float = Field(10.0, gt=0, le=300)
    #: The idle keep-alive of a listener using more than 3/4 of its connection cap.
    keep_alive_under_pressure_s: float = Field(5.0, gt=0, le=65)

    #: gridgate's own messages from this level on; other libraries' (HTTP clients, uvicorn,
    #: Alembic) only from ``warning`` on, unless ``debug`` (docs/configuration.md "Logging").
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    #: ``console`` for people, ``json`` for log collectors. Unset: ``json`` in production,
    #: ``console`` otherwise.
    log_format: Literal["json", "console"] = "console"

    @model_validator(mode="before")
    @classmethod
    def _log_format_of_env(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("log_format") is None:
            fmt = "json" if data.get("env") == "production" else "console"
            return {**data, "log_format": fmt}
        return data

    @field_validator("database_url")
    @classmethod
    def _async_database_driver(cls, value: str | None) -> str | None:
        # Refused here, not as an import error or a URL parser's traceback at the first query.
        if value is not None and not value.startswith(_DATABASE_SCHEMES):
            wanted = " or ".join(f"{scheme}//…" for scheme in _DATABASE_SCHEMES)
            raise ValueError(f"must start with {wanted}")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(_REDIS_SCHEMES):
            raise ValueError(f"must start with {', '.join(_REDIS_SCHEMES)}")
        return value

    @model_validator(mode="after")
    def _retention_in_order(self) -> Settings:
        # Rows older than their files would be recomputed from them the next minute.
        kept = self.analysis_retention_days
        if kept and (not self.log_retention_days or kept < self.log_retention_days):
            raise ValueError(
                "analysis_retention_days must be 0 (forever) or at least log_retention_days"
                " (and log_retention_days not 0)"
            )
        return self

    @model_validator(mode="after")
    def _registry_timings_in_order(self) -> Settings:
        if not self.registry_heartbeat_s < self.registry_unhealthy_s <= self.registry_remove_s:
            raise ValueError(
                "registry timings need registry_heartbeat_s < registry_unhealthy_s"
                " <= registry_remove_s"
            )
        return self

    @field_validator("registry_urls", mode="before")
    @classmethod
    def _split_urls(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip().rstrip("/") for part in value.split(",") if part.strip()]
        return value

    @field_validator("previous_data_keys", "gateway_trusted_proxies", mode="before")
    @classmethod
    def _split_keys(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("gateway_trusted_proxies")
    @classmethod
    def _valid_proxies(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(
                    f"{entry!r} is neither an IP address nor a CIDR range (like 10.0.0.0/8)"
                ) from None
        return value

    @field_validator("data_key", "previous_data_keys", "lookup_key")
    @classmethod
    def _valid_keys(cls, value: Any) -> Any:
        keys = value if isinstance(value, list) else [value]
        for key in keys:
            if key is not None:
                decode_key(key.get_secret_value())
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Command-line values beat the environment, which beats the TOML file."""
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = _CONFIG_FILE.get()
        if config_file is not None:
            sources.append(InitSettingsSource(settings_cls, init_kwargs=config_file))
        return tuple(sources)

    def __repr_args__(self) -> Any:
        for name, value in super().__repr_args__():
            if name in {
                "database_url",
                "redis_url",
                "nats_url",
                "sms_http_url",
                "accounts_jwks_url",
            }:
                yield name, mask_url(value)
            else:
                yield name, value

    # -- derived values -------------------------------------------------------------------

    @property
    def production(self) -> bool:
        """True when running as a production deployment."""
        return self.env == "production"

    @property
    def effective_database_url(self) -> str:
        """The database to use: the configured URL, or a SQLite file in the data dir."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'gridgate.db').resolve()}"

    @property
    def data_keys(self) -> list[bytes]:
        """The data-encryption key first, then older keys still accepted for decryption."""
        if self.data_key is None:
            raise ConfigurationError("no data_key configured")
        current = decode_key(self.data_key.get_secret_value())
        return [current, *(decode_key(k.get_secret_value()) for k in self.previous_data_keys)]

    @property
    def lookup_key_bytes(self) -> bytes | None:
        """The look-up hash key, if one is configured."""
        return decode_key(self.lookup_key.get_secret_value()) if self.lookup_key else None

    @property
    def signing_key(self) -> bytes:
        """The key that signs operator tokens."""
        if self.secret_key is None:
            raise ConfigurationError("no secret_key configured")
        return self.secret_key.get_secret_value().encode()

    def problems(self) -> list[str]:
        """What keeps these settings from running in their mode (empty when fine)."""
        if not self.production:
            if self.sms_provider == "http" and not self.sms_http_url:
                return ["GRIDGATE_SMS_HTTP_URL is required for the http SMS provider"]
            return []
        found: list[str] = []
        if self.secret_key is None:
            found.append("GRIDGATE_SECRET_KEY is required in production")
        elif len(self.secret_key.get_secret_value().encode()) < MIN_SECRET_BYTES:
            found.append(f"GRIDGATE_SECRET_KEY must be at least {MIN_SECRET_BYTES} bytes")
        if self.data_key is None:
            found.append("GRIDGATE_DATA_KEY (base64 of 32 random bytes) is required in production")
        if self.sms_provider == "console":
            found.append(
                "GRIDGATE_SMS_PROVIDER=http with GRIDGATE_SMS_HTTP_URL is required in production"
            )
        elif not self.sms_http_url:
            found.append("GRIDGATE_SMS_HTTP_URL is required for the http SMS provider")
        return found

    def with_development_keys(self) -> Settings:
        """Fill missing keys from (or into) ``DATA_DIR/keys.json`` in development mode.

        A newcomer needs no configuration, yet a second start must decrypt what the first
        stored, so generated keys are kept in the data dir with mode 0600.
        """
        names = ("secret_key", "data_key", "registry_token", "lookup_key")
        missing = [name for name in names if getattr(self, name) is None]
        if self.production or not missing:
            return self
        path = self.data_dir / _DEV_KEYS_FILE
        stored: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
        if any(name not in stored for name in names):
            # A data dir from before look-up keys existed hashed with its data key: keep that.
            inherited = {"lookup_key": stored.get("data_key")}
            stored = {name: stored.get(name) or inherited.get(name) or new_key() for name in names}
            self.data_dir.mkdir(parents=True, exist_ok=True)
            write_private(path, json.dumps(stored, indent=2))
        return self.model_copy(update={name: SecretStr(stored[name]) for name in missing})


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only (created 0600, never wider)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    path.chmod(0o600)


def read_config_file(path: Path) -> dict[str, Any]:
    """The settings a TOML file gives, or a :class:`ConfigurationError` that says what is wrong."""
    if path.exists() and not path.is_file() and not path.is_dir():
        # A FIFO or a device would block or never end.
        raise ConfigurationError(f"configuration file {path} is not a regular file")
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigurationError(f"configuration file {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigurationError(f"configuration file {path} is a directory") from None
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigurationError(f"cannot read configuration file {path}: {reason}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigurationError(
            f"configuration file {path} is not UTF-8 text (a TOML file is expected)"
        ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # The parser's message says where ("at line 3, column 7"), never the value.
        raise ConfigurationError(f"configuration file {path} is not valid TOML: {exc}") from None


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings once; refuse production settings that lack real secrets."""
    path = config_file
    if path is None and os.environ.get("GRIDGATE_CONFIG"):
        path = Path(os.environ["GRIDGATE_CONFIG"])
    token = _CONFIG_FILE.set(None if path is None else read_config_file(path))
    try:
        settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        # Never echo the input: a rejected value may be a secret.
        reasons = [
            f"{'.'.join(str(p) for p in err['loc'])}: "
            + (
                "unknown setting"
                if err["type"] == "extra_forbidden"
                else err["msg"].removeprefix("Value error, ")
            )
            for err in exc.errors(include_input=False, include_url=False)
        ]
        raise ConfigurationError("invalid settings: " + "; ".join(reasons)) from None
    finally:
        _CONFIG_FILE.reset(token)
    problems = settings.problems()
    if problems:
        raise ConfigurationError("; ".join(problems))
    return settings
