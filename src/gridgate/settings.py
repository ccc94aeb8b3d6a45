"""One settings object, read once at start from ``GRIDGATE_*`` variables and an optional TOML file.

Precedence, highest first: values passed by the command line, environment variables, the TOML
file named by ``--config`` or ``GRIDGATE_CONFIG``, defaults. Secrets are ``SecretStr`` so they
never appear in a repr or a log line; URLs are shown with their password masked.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import secrets
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from gridgate.errors import ConfigurationError

__all__ = ["Settings", "load_settings", "mask_url"]

_CONFIG_FILE: ContextVar[Path | None] = ContextVar("gridgate_config_file", default=None)

#: Bytes of key material a production secret must carry at least (256 bits).
MIN_SECRET_BYTES = 32
_DEV_KEYS_FILE = "keys.json"


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

    #: Where the log pipeline keeps its Parquet files: a directory, or any URL pyarrow's
    #: filesystems open (``s3://bucket/gridgate-logs``). Several gateway nodes must share one
    #: so that the hourly analysis sees every node's records. Default: DATA_DIR/logs.
    log_storage_url: str | None = None
    #: ``console`` (development: DATA_DIR/sms-outbox.jsonl) or ``http`` (a real SMS gateway).
    sms_provider: Literal["console", "http"] = "console"
    sms_http_url: str | None = None
    sms_http_token: SecretStr | None = None
    sms_template: str = "【网上国网】验证码 {code}，{minutes} 分钟内有效，请勿告诉他人。"
    #: Whether one 户号 may be bound to several accounts (family members, a landlord …).
    accounts_allow_shared_binding: bool = True

    operator_token_ttl_s: int = Field(900, ge=60, le=86_400)
    operator_lockout_threshold: int = Field(10, ge=3, le=100)
    operator_lockout_s: int = Field(900, ge=60, le=3600)
    admin_max_body_bytes: int = Field(1_048_576, ge=1024, le=64 * 1_048_576)
    shutdown_timeout_s: float = Field(3.0, gt=0, le=60)

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "console"] = "json"

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
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
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


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings once; refuse production settings that lack real secrets."""
    path = config_file
    if path is None and os.environ.get("GRIDGATE_CONFIG"):
        path = Path(os.environ["GRIDGATE_CONFIG"])
    if path is not None and not path.is_file():
        raise ConfigurationError(f"configuration file {path} does not exist")
    token = _CONFIG_FILE.set(path)
    try:
        settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        # Never echo the input: a rejected value may be a secret.
        reasons = [
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
            for err in exc.errors(include_input=False, include_url=False)
        ]
        raise ConfigurationError("invalid settings: " + "; ".join(reasons)) from None
    finally:
        _CONFIG_FILE.reset(token)
    problems = settings.problems()
    if problems:
        raise ConfigurationError("; ".join(problems))
    return settings
