"""Assertions shared by the demo business system tests."""

from __future__ import annotations

from typing import Any

import httpx


def assert_problem(answer: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """Check that ``answer`` is an RFC 9457 problem with this status and code; its body."""
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = answer.json()
    assert body["code"] == code
    assert body["status"] == status
    assert body["type"] == f"urn:gridgate:error:{code}"
    return body
