"""Settings: environment and TOML, secrets hidden, production refuses weak configuration."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from gridgate.errors import ConfigurationError
from gridgate.settings import load_settings, mask_url, new_key


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("GRIDGATE_"):
            monkeypatch.delenv(name)


def test_defaults() -> None:
    settings = load_settings()
    assert settings.env == "development"
    assert (settings.gateway_port, settings.admin_port, settings.registry_port) == (
        8080,
        8090,
        8070,
    )
    assert settings.effective_database_url.startswith("sqlite+aiosqlite:///")


def test_environment_beats_toml_and_cli_beats_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "gridgate.toml"
    config.write_text('admin_port = 9000\ngateway_port = 9001\nregistry_urls = ["http://a:8070"]\n')
    monkeypatch.setenv("GRIDGATE_GATEWAY_PORT", "9101")
    monkeypatch.setenv("GRIDGATE_REGISTRY_URLS", "http://r1:8070, http://r2:8070/")
    settings = load_settings(config, registry_port=9200)
    assert settings.admin_port == 9000  # TOML
    assert settings.gateway_port == 9101  # environment over TOML
    assert settings.registry_port == 9200  # command line over all
    assert settings.registry_urls == ["http://r1:8070", "http://r2:8070"]
    assert settings.gateway_trusted_proxies == ["127.0.0.1", "::1"]
    monkeypatch.setenv("GRIDGATE_GATEWAY_TRUSTED_PROXIES", "10.0.0.5, 10.0.0.6")
    assert load_settings(config).gateway_trusted_proxies == ["10.0.0.5", "10.0.0.6"]


def test_config_file_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "g.toml"
    config.write_text('log_format = "console"\n')
    monkeypatch.setenv("GRIDGATE_CONFIG", str(config))
    assert load_settings().log_format == "console"
    monkeypatch.setenv("GRIDGATE_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigurationError, match="does not exist"):
        load_settings()


def test_secrets_never_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    key = new_key()
    monkeypatch.setenv("GRIDGATE_SECRET_KEY", "super-secret-signing-key-value-0123456789")
    monkeypatch.setenv("GRIDGATE_DATA_KEY", key)
    monkeypatch.setenv("GRIDGATE_DATABASE_URL", "postgresql+asyncpg://gg:pa55word@db:5432/gg")
    monkeypatch.setenv("GRIDGATE_REDIS_URL", "redis://:redispw@cache:6379/0")
    text = repr(load_settings()) + str(load_settings())
    for secret in ("super-secret-signing-key", key, "pa55word", "redispw"):
        assert secret not in text
    assert "postgresql+asyncpg://gg:***@db:5432/gg" in text


def test_invalid_values_are_refused_without_echo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRIDGATE_DATA_KEY", "not-a-key-but-a-secret-value")
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    assert "data_key" in str(caught.value)
    assert "not-a-key-but-a-secret-value" not in str(caught.value)
    monkeypatch.delenv("GRIDGATE_DATA_KEY")
    with pytest.raises(ConfigurationError, match="gateway_port"):
        load_settings(gateway_port=70000)
    with pytest.raises(ConfigurationError, match="registry timings"):
        load_settings(registry_heartbeat_s=20)


def test_production_requires_real_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRIDGATE_ENV", "production")
    with pytest.raises(ConfigurationError, match="GRIDGATE_SECRET_KEY"):
        load_settings()
    monkeypatch.setenv("GRIDGATE_SECRET_KEY", "short")
    monkeypatch.setenv("GRIDGATE_DATA_KEY", new_key())
    with pytest.raises(ConfigurationError, match="at least 32 bytes"):
        load_settings()
    monkeypatch.setenv("GRIDGATE_SECRET_KEY", new_key())
    with pytest.raises(ConfigurationError, match="GRIDGATE_SMS_PROVIDER"):
        load_settings()  # the console SMS provider is for development only
    monkeypatch.setenv("GRIDGATE_SMS_PROVIDER", "http")
    monkeypatch.setenv("GRIDGATE_SMS_HTTP_URL", "https://sms.example/send")
    settings = load_settings()
    assert settings.production
    assert settings.with_development_keys() is settings  # never writes keys in production


def test_development_keys_are_generated_once_and_kept(tmp_path: Path) -> None:
    first = load_settings(data_dir=tmp_path).with_development_keys()
    keys = tmp_path / "keys.json"
    assert stat.S_IMODE(keys.stat().st_mode) == 0o600
    second = load_settings(data_dir=tmp_path).with_development_keys()
    assert first.data_keys == second.data_keys
    assert first.signing_key == second.signing_key
    assert json.loads(keys.read_text())["data_key"]


def test_mask_url() -> None:
    assert mask_url("redis://cache:6379") == "redis://cache:6379"
    assert mask_url("nats://u:p@n:4222") == "nats://u:***@n:4222"
    assert mask_url(None) is None


def test_log_format_follows_the_deployment_unless_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert load_settings().log_format == "console"  # a person at a terminal
    for name, value in {
        "GRIDGATE_ENV": "production",
        "GRIDGATE_SECRET_KEY": new_key(),
        "GRIDGATE_DATA_KEY": new_key(),
        "GRIDGATE_SMS_PROVIDER": "http",
        "GRIDGATE_SMS_HTTP_URL": "https://sms.example/send",
    }.items():
        monkeypatch.setenv(name, value)
    assert load_settings().log_format == "json"  # a log collector
    assert load_settings(log_format="console").log_format == "console"
    config = tmp_path / "gridgate.toml"
    config.write_text('log_format = "console"\n')
    assert load_settings(config).log_format == "console"


def test_config_file_problems_say_what_is_wrong(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("gateway_port = \n")
    with pytest.raises(ConfigurationError, match="is not valid TOML"):
        load_settings(broken)
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigurationError, match="is not UTF-8 text"):
        load_settings(binary)
    with pytest.raises(ConfigurationError, match="is a directory"):
        load_settings(tmp_path)
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigurationError, match="is not a regular file"):
        load_settings(fifo)  # would block for ever if it were read
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("gateway_prot = 1\n")
    with pytest.raises(ConfigurationError, match="gateway_prot: unknown setting"):
        load_settings(unknown)
    with pytest.raises(ConfigurationError, match="database_url: must start with"):
        load_settings(database_url="mysql://db/gridgate")
    with pytest.raises(ConfigurationError, match="redis_url: must start with"):
        load_settings(redis_url="http://cache:6379")


def test_trusted_proxies_are_addresses_or_ranges() -> None:
    settings = load_settings(gateway_trusted_proxies="10.0.0.0/8, 127.0.0.1,fd00::/8")
    assert settings.gateway_trusted_proxies == ["10.0.0.0/8", "127.0.0.1", "fd00::/8"]
    for bad in ("10.0.0.0/33", "lb.example.com"):
        with pytest.raises(ConfigurationError, match="gateway_trusted_proxies") as caught:
            load_settings(gateway_trusted_proxies=bad)
        assert "neither an IP address nor a CIDR range" in str(caught.value)
