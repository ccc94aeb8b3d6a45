"""Property-based fuzzing of the gateway: whatever arrives, the answer is never a 500."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.functional.gateway_harness import Gateway

_segment = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12
)
# Requests go over a real socket: values an HTTP client would refuse to send (leading or
# trailing blanks) are trimmed; the engine's own tests (engine/src/http1_tests.rs) send raw
# bytes.
_header_value = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80
).map(str.strip)
_header_name = st.sampled_from(
    [
        "x-gg-channel",
        "x-gg-timestamp",
        "x-gg-nonce",
        "x-gg-signature",
        "authorization",
        "content-type",
        "traceparent",
        "connection",
        "x-gg-account",
        "content-encoding",
    ]
)
FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _check(answer: object) -> None:
    status = answer.status_code  # type: ignore[attr-defined]
    assert status < 500 or answer.headers.get("x-upstream"), answer.text  # type: ignore[attr-defined]
    if status >= 400 and not answer.headers.get("x-upstream"):  # type: ignore[attr-defined]
        assert answer.headers["content-type"] == "application/problem+json"  # type: ignore[attr-defined]


@FUZZ
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]),
    segments=st.lists(_segment, max_size=6),
    query=st.text(max_size=40),
    headers=st.dictionaries(_header_name, _header_value, max_size=6),
    body=st.binary(max_size=256),
)
async def test_unsigned_garbage_never_500(
    gateway: Gateway,
    method: str,
    segments: list[str],
    query: str,
    headers: dict[str, str],
    body: bytes,
) -> None:
    from urllib.parse import quote  # noqa: PLC0415

    path = "/" + "/".join(quote(s, safe="") for s in segments)
    url = path + ("?" + quote(query, safe="=&") if query else "")
    _check(await gateway.client.request(method, url, headers=headers, content=body))


@FUZZ
@given(
    query=st.text(max_size=40),
    body=st.binary(max_size=512),
    extra=st.dictionaries(
        _header_name.filter(lambda h: not h.startswith("x-gg")), _header_value, max_size=3
    ),
    customer=st.text(alphabet="0123456789abcXYZ-_.~%", min_size=1, max_size=20),
)
async def test_signed_requests_with_odd_content_never_500(
    gateway: Gateway, query: str, body: bytes, extra: dict[str, str], customer: str
) -> None:
    from urllib.parse import quote  # noqa: PLC0415

    path = f"/api/v1/t/{quote(customer, safe='')}/ok"
    answer = await gateway.send(
        "GET", path, query=quote(query, safe="=&"), body=body, headers=extra
    )
    _check(answer)
