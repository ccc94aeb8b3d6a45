"""The X-GG-Internal signature: the vector of api.md, and what a verifier refuses."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from gridgate.errors import InternalSignatureInvalid
from gridgate.internal_auth import (
    InternalKeys,
    InternalVerifier,
    header_value,
    string_to_sign,
)

SECRET = b"gridgate-example-secret-key-0123456789"
NOW = 1764720000
TARGET = "/api/v1/customers/3300000001/bills?month=2026-10"
HEADERS = [
    ("x-gg-channel", "app"),
    ("x-gg-account", "0123456789abcdef0123456789abcdef"),
    ("x-gg-level", "1"),
    ("x-gg-session", "fedcba9876543210fedcba9876543210"),
    ("x-gg-client-ip", "203.0.113.7"),
    ("x-trace-id", "4bf92f3577b34da6a3ce929d0e0e4736"),
    ("accept", "application/json"),
]
#: api.md's vector, recomputed there with nothing but hmac and hashlib.
VECTOR = "v1;billing;1764720000;8024397a25d35b3c1ecd65fdecf77915024311803d5f666964b4dfa2a68760a4"


def _key(service: str) -> bytes:
    return InternalKeys(SECRET).for_service(service)


def _verifier(service: str = "billing") -> InternalVerifier:
    return InternalVerifier({service: _key(service)}, clock=lambda: NOW + 5)


def _signed(headers: list[tuple[str, str]] = HEADERS) -> list[tuple[str, str]]:
    value = header_value(_key("billing"), "billing", "GET", TARGET, headers, timestamp=NOW)
    return [*headers, ("x-gg-internal", value)]


def test_the_documented_vector() -> None:
    master = hmac.digest(SECRET, b"gridgate/internal-auth/v1", "sha256")
    assert _key("billing") == hmac.digest(master, b"billing", "sha256")
    assert _key("billing").hex() == (
        "9302532a9a476a495b15323c0158e99bd9c59b24cb3b658089356946aecee76a"
    )
    message = string_to_sign("billing", NOW, "GET", TARGET, HEADERS)
    assert message == (
        b"v1\nbilling\n1764720000\nGET\n/api/v1/customers/3300000001/bills?month=2026-10\n"
        b"x-gg-account:0123456789abcdef0123456789abcdef\nx-gg-channel:app\n"
        b"x-gg-client-ip:203.0.113.7\nx-gg-level:1\n"
        b"x-gg-session:fedcba9876543210fedcba9876543210\n"
        b"x-trace-id:4bf92f3577b34da6a3ce929d0e0e4736\n"
    )
    digest = hmac.new(_key("billing"), message, hashlib.sha256).hexdigest()
    assert header_value(_key("billing"), "billing", "GET", TARGET, HEADERS, timestamp=NOW) == (
        VECTOR
    )
    assert VECTOR.endswith(digest)


def test_each_service_has_its_own_key() -> None:
    assert len({_key(s) for s in ("billing", "marketing", "accounts")}) == 3
    assert InternalKeys(b"another-secret").for_service("billing") != _key("billing")


def test_a_signed_call_verifies() -> None:
    assert _verifier().verify("GET", TARGET, _signed()) == "billing"
    # Header names arrive in any case; only the lower-case form is signed.
    upper = [(name.upper(), value) for name, value in _signed()]
    assert _verifier().verify("get", TARGET, upper) == "billing"


@pytest.mark.parametrize(
    ("method", "target", "change"),
    [
        ("POST", TARGET, None),
        ("GET", "/api/v1/customers/3300000002/bills?month=2026-10", None),
        ("GET", "/api/v1/customers/3300000001/bills?month=2026-09", None),
        ("GET", "/api/v1/customers/3300000001/bills", None),
        ("GET", TARGET, ("x-gg-account", "ffffffffffffffffffffffffffffffff")),
        ("GET", TARGET, ("x-gg-level", "2")),
        ("GET", TARGET, ("x-gg-client-ip", "198.51.100.1")),
    ],
)
def test_any_change_breaks_the_signature(
    method: str, target: str, change: tuple[str, str] | None
) -> None:
    headers = _signed()
    if change is not None:
        headers = [(n, change[1] if n == change[0] else v) for n, v in headers]
    with pytest.raises(InternalSignatureInvalid, match="does not match"):
        _verifier().verify(method, target, headers)


def test_an_identity_header_added_or_removed_breaks_the_signature() -> None:
    added = [*_signed(), ("x-gg-customer-nos", "3300000001")]
    with pytest.raises(InternalSignatureInvalid, match="does not match"):
        _verifier().verify("GET", TARGET, added)
    removed = [(n, v) for n, v in _signed() if n != "x-gg-account"]
    with pytest.raises(InternalSignatureInvalid, match="does not match"):
        _verifier().verify("GET", TARGET, removed)
    # Headers outside the signed set may change on the way.
    other = [*_signed(), ("x-forwarded-for", "10.1.1.1, 10.2.2.2"), ("accept-encoding", "gzip")]
    assert _verifier().verify("GET", TARGET, other) == "billing"


def test_a_signed_header_twice_is_refused() -> None:
    twice = [*_signed(), ("x-gg-account", "0123456789abcdef0123456789abcdef")]
    with pytest.raises(InternalSignatureInvalid, match="twice"):
        _verifier().verify("GET", TARGET, twice)
    with pytest.raises(InternalSignatureInvalid, match="twice"):
        _verifier().verify("GET", TARGET, [*_signed(), _signed()[-1]])


@pytest.mark.parametrize("offset", [-61, 61, -3600])
def test_outside_the_window_is_refused(offset: int) -> None:
    verifier = InternalVerifier({"billing": _key("billing")}, clock=lambda: NOW - offset)
    with pytest.raises(InternalSignatureInvalid, match="expired"):
        verifier.verify("GET", TARGET, _signed())


def test_signed_for_another_service_or_with_its_key_is_refused() -> None:
    with pytest.raises(InternalSignatureInvalid, match="another service"):
        _verifier("marketing").verify("GET", TARGET, _signed())
    # A business system's own key cannot sign for another system.
    forged = header_value(_key("billing"), "marketing", "GET", TARGET, HEADERS, timestamp=NOW)
    with pytest.raises(InternalSignatureInvalid, match="does not match"):
        _verifier("marketing").verify("GET", TARGET, [*HEADERS, ("x-gg-internal", forged)])


@pytest.mark.parametrize(
    "value",
    [
        "",
        "v1",
        "v2;billing;1764720000;" + "0" * 64,
        "v1;billing;1764720000",
        "v1;billing;１７６４７２００００;" + "0" * 64,  # full-width digits
        "v1;billing;176472000²;" + "0" * 64,
        "v1;billing;9" * 5000 + ";" + "0" * 64,
        "v1;billing;1764720000;" + "0" * 63,
        "v1;billing;1764720000;" + "G" * 64,
        "v1;billing;1764720000;" + "0" * 64 + ";x",
    ],
)
def test_malformed_values_are_refused_not_crashed(value: str) -> None:
    with pytest.raises(InternalSignatureInvalid):
        _verifier().verify("GET", TARGET, [*HEADERS, ("x-gg-internal", value)])


def test_no_header_is_refused() -> None:
    with pytest.raises(InternalSignatureInvalid, match="through the gateway"):
        _verifier().verify("GET", TARGET, HEADERS)
