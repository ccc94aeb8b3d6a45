"""Redaction of audit snapshots."""

from __future__ import annotations

from gridgate.operators.audit import redact


def test_redact_nested_secrets_keeps_the_rest() -> None:
    data = {
        "code": "app",
        "secret": "s",
        "password": "p",
        "nested": {"access_token": "t", "items": [{"sms_code": "123456", "name": "n"}]},
        "password_hash": None,
        "secret_rotated_at": "2026-11-22T00:00:00Z",
    }
    assert redact(data) == {
        "code": "app",
        "secret": "***",
        "password": "***",
        "nested": {"access_token": "***", "items": [{"sms_code": "***", "name": "n"}]},
        "password_hash": None,
        "secret_rotated_at": "2026-11-22T00:00:00Z",
    }
