"""Channel request signing: api.md's test vectors, the canonical query, tampering."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from gridgate.gateway.signing import (
    HEADER_CHANNEL,
    HEADER_NONCE,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    NONCE,
    canonical_query,
    sign,
    signature_matches,
    signed_headers,
    string_to_sign,
    verified_query,
)

#: The vectors every implementation shares (the Rust engine's tests read the same file).
SHARED = json.loads(
    (Path(__file__).parents[2] / "vectors" / "signing.json").read_text(encoding="utf-8")
)

#: api.md "Channel request signing", copied verbatim: channel apps are built against these.
VECTORS = [
    (
        "demo-app-secret-0001",
        "GET",
        "/api/v1/customers/3300000001/bills",
        "month=2026-10&b=2&a=1",
        "1763779200",
        "n-7f3a9c2e1b",
        b"",
        "CkJh4JF8bDDPdM6En3KunQV7T5omnDBKvluZxYmUqvI=",
    ),
    (
        "demo-app-secret-0001",
        "POST",
        "/api/v1/auth/token",
        "",
        "1763779200",
        "nonce-000000000001",
        b'{"grant_type":"password","phone":"13800000001","password":"Passw0rd!x"}',
        "iZuUQuJolOoWUGYZuvRlVPI/JiuK3OYqs2ARlv9ubMY=",
    ),
    (
        "s3crét-wechat",
        "GET",
        "/api/v1/notices/outages",
        "region=%E8%A5%BF%E6%B9%96&page=1",
        "1763779260",
        "abcDEF123_-xyz",
        b"",
        "LaopJ7WOZ00TTlsxUROVT/sdcLuHU6/oEG7TbVJpGxM=",
    ),
]

REQUEST: dict[str, Any] = {
    "method": "POST",
    "path": "/api/v1/payments",
    "raw_query": "customer_no=3300000001&month=2026-10",
    "timestamp": "1763779200",
    "nonce": "nonce-000000000042",
    "body": b'{"amount":"123.45"}',
}
SECRET = "demo-app-secret-0001"


@pytest.mark.parametrize(
    ("secret", "method", "path", "query", "timestamp", "nonce", "body", "signature"), VECTORS
)
def test_api_md_vectors(
    secret: str,
    method: str,
    path: str,
    query: str,
    timestamp: str,
    nonce: str,
    body: bytes,
    signature: str,
) -> None:
    assert sign(secret, method, path, query, timestamp, nonce, body) == signature
    assert signature_matches(secret, signature, method, path, query, timestamp, nonce, body)


def test_string_to_sign_has_the_six_lines_of_api_md() -> None:
    text = string_to_sign("GET", "/api/v1/x", "b=2&a=1", 1763779200, "nonce-000000000001", b"")

    assert text.split(b"\n") == [
        b"GET",
        b"/api/v1/x",
        b"a=1&b=2",
        b"1763779200",
        b"nonce-000000000001",
        b"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",  # sha256 of b""
    ]


@pytest.mark.parametrize(
    "case", SHARED["canonical_queries"], ids=[c["note"] for c in SHARED["canonical_queries"]]
)
def test_canonical_query(case: dict[str, str]) -> None:
    # As the gateway receives it (bytes) and as a client writes it (text): the same answer.
    assert canonical_query(case["query"].encode()) == case["canonical"]
    assert canonical_query(case["query"]) == case["canonical"]
    # The canonical form is its own canonical form: what the gateway forwards verifies again.
    assert canonical_query(case["canonical"]) == case["canonical"]


@pytest.mark.parametrize(
    "vector", SHARED["signatures"], ids=[v["name"] for v in SHARED["signatures"]]
)
def test_shared_signature_vectors(vector: dict[str, str]) -> None:
    body = vector["body"].encode()
    request = (
        vector["method"],
        vector["path"],
        vector["query"],
        vector["timestamp"],
        vector["nonce"],
        body,
    )
    assert string_to_sign(*request).decode() == vector["string_to_sign"]
    assert sign(vector["secret"], *request) == vector["signature"]
    assert (
        verified_query(vector["secret"], vector["signature"], *request) == vector["canonical_query"]
    )


def test_the_shared_vectors_hold_the_contract_ones() -> None:
    shared = {v["signature"] for v in SHARED["signatures"]}
    assert {vector[-1] for vector in VECTORS} <= shared


@pytest.mark.parametrize(
    ("sent", "other"),
    [
        ("q=a+b", "q=a%20b"),  # a plus is not a space
        ("a=", "a=%20"),
        ("a=1&b=2", "a=1%26b%3D2"),  # an encoded '&' or '=' is data, not a separator
        ("a;b=1", "a=&b=1"),
        ("k=%zz", "k=%7A%7A"),
    ],
)
def test_queries_that_read_differently_sign_differently(sent: str, other: str) -> None:
    assert canonical_query(sent) != canonical_query(other)
    signature = sign(SECRET, "GET", "/p", sent, 1, "nonce-000000000001", b"")
    assert (
        verified_query(SECRET, signature, "GET", "/p", other, 1, "nonce-000000000001", b"") is None
    )


def test_a_wrong_signature_verifies_no_query() -> None:
    assert verified_query(SECRET, "x", "GET", "/p", "a=1", 1, "nonce-000000000001", b"") is None


def test_pairs_sort_by_name_before_value() -> None:
    # Sorting the joined "name=value" text would put "a-b=1" first ('-' < '=').
    assert canonical_query("a-b=1&a=2") == "a=2&a-b=1"


def test_invalid_utf8_in_the_query_signs_without_error() -> None:
    assert canonical_query("k=%FF%FE&j=%C3") == "j=%C3&k=%FF%FE"
    assert canonical_query("k=%FF") != canonical_query("k=%FE")


def test_encoded_and_raw_forms_sign_alike() -> None:
    assert sign(SECRET, "GET", "/p", "k=%7e&n=a", 1, "nonce-000000000001", b"") == sign(
        SECRET, "GET", "/p", "n=a&k=~", 1, "nonce-000000000001", b""
    )


@pytest.mark.parametrize(
    "change",
    [
        {"body": b'{"amount":"923.45"}'},
        {"path": "/api/v1/payments/"},
        {"raw_query": "customer_no=3300000002&month=2026-10"},
        {"raw_query": "customer_no=3300000001"},
        {"timestamp": "1763779201"},
        {"nonce": "nonce-000000000043"},
        {"method": "PUT"},
    ],
)
def test_a_tampered_request_fails(change: dict[str, Any]) -> None:
    signature = sign(SECRET, **REQUEST)

    assert signature_matches(SECRET, signature, **REQUEST)
    assert not signature_matches(SECRET, signature, **{**REQUEST, **change})


def test_a_business_system_signs_alike_under_its_own_header() -> None:
    request: dict[str, Any] = {
        "query": "b=2&a=1",
        "body": b"{}",
        "timestamp": 1,
        "nonce": "nonce-000000000001",
    }
    channel = signed_headers("billing", SECRET, "POST", "/p", **request)
    system = signed_headers("billing", SECRET, "POST", "/p", system=True, **request)
    assert system.pop("X-GG-System") == channel.pop("X-GG-Channel") == "billing"
    assert system == channel


def test_another_secret_fails() -> None:
    signature = sign(SECRET, **REQUEST)

    assert not signature_matches("demo-app-secret-0002", signature, **REQUEST)


@pytest.mark.parametrize("presented", ["", "not base64", "签名", "\udcff"])
def test_garbage_signatures_do_not_match(presented: str) -> None:
    assert not signature_matches(SECRET, presented, **REQUEST)


def test_signed_headers_round_trip() -> None:
    before = int(time.time())
    headers = signed_headers("wechat", SECRET, "POST", "/api/v1/payments", query="b=1", body=b"{}")

    assert headers[HEADER_CHANNEL] == "wechat"
    assert NONCE.fullmatch(headers[HEADER_NONCE])
    assert int(headers[HEADER_TIMESTAMP]) >= before
    assert signature_matches(
        SECRET,
        headers[HEADER_SIGNATURE],
        "POST",
        "/api/v1/payments",
        "b=1",
        headers[HEADER_TIMESTAMP],
        headers[HEADER_NONCE],
        b"{}",
    )


def test_signed_headers_pick_a_fresh_nonce_each_time() -> None:
    first = signed_headers("wechat", SECRET, "GET", "/api/v1/x")
    second = signed_headers("wechat", SECRET, "GET", "/api/v1/x")

    assert first[HEADER_NONCE] != second[HEADER_NONCE]


def test_signed_headers_with_a_given_timestamp_and_nonce() -> None:
    headers = signed_headers(
        "wechat", SECRET, "GET", "/api/v1/x", timestamp=1763779200, nonce="nonce-000000000001"
    )

    assert headers[HEADER_TIMESTAMP] == "1763779200"
    assert headers[HEADER_SIGNATURE] == sign(
        SECRET, "GET", "/api/v1/x", "", 1763779200, "nonce-000000000001", b""
    )


@pytest.mark.parametrize("nonce", ["short", "x" * 65, "nonce with spaces!", "nonce-00000000001\n"])
def test_signed_headers_refuse_a_malformed_nonce(nonce: str) -> None:
    with pytest.raises(ValueError, match="nonce"):
        signed_headers("wechat", SECRET, "GET", "/api/v1/x", nonce=nonce)
