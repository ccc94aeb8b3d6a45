"""Every admin route answers bad input with a 4xx problem, never a 500 or a stack trace."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pydantic import TypeAdapter, ValidationError

from gridgate.accounts import schemas as accounts_schemas
from gridgate.app import build_registry
from gridgate.runtime import Runtime

#: Numbers Python's str.isdigit (and int() for some) takes, but no API should: superscript two,
#: Arabic-Indic, extended Arabic-Indic and full-width digits.
NON_ASCII_DIGITS = ["²", "١٢", "۱۲", "１２", "1²"]
# Filled-in path parameters: real-looking, hostile and absurd values.
PATH_VALUES = [
    "app",
    "ghost",
    "1",
    "0",
    "-1",
    "99999999999999999999",
    "%00",
    "%E2%80%AE",
    "x" * 300,
    *NON_ASCII_DIGITS,
]
BAD_BODIES: list[tuple[str, bytes, str]] = [
    ("malformed", b'{"code": "app", ', "application/json"),
    ("not-json", b"code=app", "application/x-www-form-urlencoded"),
    ("array", b"[1, 2, 3]", "application/json"),
    ("number", b"42", "application/json"),
    ("null", b"null", "application/json"),
    ("string", b'"hello"', "application/json"),
    (
        "wrong-types",
        b'{"code": 1, "name": [], "port": "x", "type": {}, "roles": "admin",'
        b' "allowed_ips": "10.0.0.1", "timeout_ms": 1e309, "min_level": true}',
        "application/json",
    ),
    ("unknown-fields", b'{"surprise": true, "__proto__": {}}', "application/json"),
    (
        "nul-bytes",
        b'{"code": "a\\u0000b", "name": "\\u0000", "username": "\\u0000"}',
        "application/json",
    ),
    ("deep", b'{"a":' * 2000 + b"1" + b"}" * 2000, "application/json"),
    ("invalid-utf8", b'{"name": "\xff\xfe"}', "application/json"),
]
QUERY_VALUES = [
    "",
    "\x00",
    "-1",
    "abc",
    "9" * 40,
    "2000-13-45",
    "%",
    "' OR 1=1 --",
    *NON_ASCII_DIGITS,
]


async def _routes(client: httpx.AsyncClient) -> list[tuple[str, str, list[str]]]:
    """Every (method, path template, query parameters) the OpenAPI document declares."""
    document = (await client.get("/admin/openapi.json")).json()
    found = []
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            params = [p["name"] for p in operation.get("parameters", []) if p["in"] == "query"]
            found.append((method.upper(), path, params))
    return found


def _fill(path: str, value: str) -> str:
    return re.sub(r"\{[^}]+\}", value, path)


def _check(answer: httpx.Response, context: Any) -> None:
    assert answer.status_code < 500, (context, answer.status_code, answer.text[:300])
    if answer.status_code >= 400:
        assert answer.headers["content-type"] == "application/problem+json", context
        body = answer.json()
        assert body["code"] and body["status"] == answer.status_code, context
        assert "Traceback" not in answer.text, context


async def test_no_admin_route_answers_500(admin: httpx.AsyncClient, runtime: Runtime) -> None:
    routes = await _routes(admin)
    assert len(routes) >= 25  # every resource of the admin API is covered
    huge = b'{"name": "' + b"x" * (runtime.settings.admin_max_body_bytes + 10) + b'"}'
    for method, path, params in routes:
        for value in PATH_VALUES:
            url = _fill(path, value)
            if method in {"GET", "DELETE"}:
                _check(await admin.request(method, url), (method, url))
                for name in params:
                    for query in QUERY_VALUES:
                        answer = await admin.request(method, url, params={name: query})
                        _check(answer, (method, url, name, query))
                continue
            for label, body, content_type in BAD_BODIES:
                answer = await admin.request(
                    method, url, content=body, headers={"content-type": content_type}
                )
                _check(answer, (method, url, label))
            _check(
                await admin.request(
                    method, url, content=huge, headers={"content-type": "application/json"}
                ),
                (method, url, "huge"),
            )


async def test_huge_bodies_are_413_even_when_streamed(
    admin: httpx.AsyncClient, runtime: Runtime
) -> None:
    limit = runtime.settings.admin_max_body_bytes

    async def chunks() -> Any:
        for _ in range(limit // 65536 + 2):
            yield b"x" * 65536

    declared = await admin.post(
        "/admin/v1/channels",
        content=b"x" * (limit + 1),
        headers={"content-type": "application/json"},
    )
    assert declared.status_code == 413
    assert declared.json()["code"] == "request.too_large"
    streamed = await admin.post(
        "/admin/v1/channels", content=chunks(), headers={"content-type": "application/json"}
    )
    assert streamed.status_code == 413
    assert streamed.json()["code"] == "request.too_large"


async def test_unknown_routes_and_methods(admin: httpx.AsyncClient) -> None:
    missing = await admin.get("/admin/v1/nothing-here")
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
    wrong_method = await admin.put("/admin/v1/channels")
    assert wrong_method.status_code == 405
    assert wrong_method.json()["code"] == "request.method_not_allowed"


# -- numbers in anything but ASCII digits (issue 12, item 7) ------------------------------------


@pytest.mark.parametrize("value", NON_ASCII_DIGITS)
@pytest.mark.parametrize("name", ["page", "page_size"])
async def test_paging_with_non_ascii_digits_is_422(
    admin: httpx.AsyncClient, name: str, value: str
) -> None:
    answer = await admin.get("/admin/v1/channels", params={name: value})
    assert answer.status_code == 422, answer.text
    assert answer.json()["code"] == "request.invalid" and answer.json()["field"] == name


@pytest.mark.parametrize(
    ("name", "value"),
    [("phone", "13٩١٢٣٤٥٦٧٨"), ("phone", "13９１２３４５６７８"), ("customer_no", "٣٣٠٠٠٠٠٠٠١")],
)
async def test_account_search_with_non_ascii_digits_is_422(
    admin: httpx.AsyncClient, name: str, value: str
) -> None:
    answer = await admin.get("/admin/v1/accounts", params={name: value})
    assert answer.status_code == 422, answer.text
    assert answer.json()["field"] == name


@pytest.mark.parametrize(
    ("field", "good", "odd"),
    [
        ("Phone", "13912345678", "13٩١٢٣٤٥٦٧٨"),
        ("Code6", "123456", "１２３４５６"),
        ("CustomerNo", "3300000001", "۳۳۰۰۰۰۰۰۰۱"),
    ],
)
def test_account_number_fields_take_ascii_digits_only(field: str, good: str, odd: str) -> None:
    # The request fields of the accounts service (sign-in, SMS codes, bindings): a regex \d
    # takes any Unicode digit, in Python and in pydantic's Rust engine alike.
    adapter: TypeAdapter[str] = TypeAdapter(getattr(accounts_schemas, field))
    assert adapter.validate_python(good) == good
    with pytest.raises(ValidationError):
        adapter.validate_python(odd)


@pytest.fixture
async def registry(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=build_registry(runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://registry.test") as client:
        assert runtime.settings.registry_token is not None
        token = runtime.settings.registry_token.get_secret_value()
        client.headers["Authorization"] = f"Bearer {token}"
        yield client


@pytest.mark.parametrize("value", NON_ASCII_DIGITS)
@pytest.mark.parametrize("name", ["revision", "timeout"])
async def test_registry_watch_with_non_ascii_digits_is_422(
    registry: httpx.AsyncClient, name: str, value: str
) -> None:
    params = {"revision": "0", "timeout": "0", name: value}
    answer = await registry.get("/registry/v1/watch", params=params)
    assert answer.status_code == 422, answer.text
    assert answer.json()["code"] == "request.invalid" and answer.json()["field"] == name
