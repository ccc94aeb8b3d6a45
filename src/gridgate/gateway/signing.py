"""Channel request signing (渠道请求签名): HMAC-SHA256 over the request, as fixed by api.md.

The gateway verifies with :func:`signature_matches`; channel apps and tests sign with
:func:`signed_headers`. Both sides share :func:`string_to_sign`, so they cannot drift apart.

Canonical query rules beyond api.md's wording, fixed here so every client can follow them:

- pairs are split on ``&`` (empty segments carry no pair and are skipped), name and value on
  the first ``=`` (no ``=`` means an empty value);
- decoding is plain percent-decoding: ``+`` stays a literal ``+`` (re-encoded as ``%2B``), it
  does **not** mean a space as in HTML forms — a client must send a space as ``%20``;
- bytes that are not valid UTF-8 survive decoding unchanged (``surrogateescape``) and are
  re-encoded to the same ``%XX``, so such a query signs fine instead of failing;
- pairs are sorted by the *re-encoded* name, then the re-encoded value (plain ASCII order, the
  same in every language).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from urllib.parse import quote, unquote

__all__ = [
    "HEADER_CHANNEL",
    "HEADER_NONCE",
    "HEADER_SIGNATURE",
    "HEADER_TIMESTAMP",
    "NONCE",
    "WINDOW_S",
    "canonical_query",
    "sign",
    "signature_matches",
    "signed_headers",
    "string_to_sign",
]

HEADER_CHANNEL = "X-GG-Channel"
HEADER_TIMESTAMP = "X-GG-Timestamp"
HEADER_NONCE = "X-GG-Nonce"
HEADER_SIGNATURE = "X-GG-Signature"

#: What a nonce may look like (api.md). Check with ``fullmatch``: ``$`` alone lets a newline in.
NONCE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
#: How far (seconds) a request's timestamp may be from the gateway's clock, either way.
WINDOW_S = 300

# RFC 3986 unreserved characters besides letters and digits, which quote() always keeps.
_UNRESERVED = "-_.~"


def _recode(part: str) -> str:
    decoded = unquote(part, errors="surrogateescape")
    return quote(decoded, safe=_UNRESERVED, errors="surrogateescape")


_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def canonical_query(raw_query: str) -> str:
    """The CANONICAL_QUERY of api.md for a query string as sent (without the ``?``)."""
    if not raw_query:
        return ""
    pairs: list[tuple[str, str]] = []
    for segment in raw_query.split("&"):
        if not segment:
            continue
        name, _, value = segment.partition("=")
        pairs.append((_recode(name), _recode(value)))
    pairs.sort()
    return "&".join(f"{name}={value}" for name, value in pairs)


def string_to_sign(
    method: str, path: str, raw_query: str, timestamp: int | str, nonce: str, body: bytes
) -> bytes:
    """The exact bytes a channel signs for this request."""
    # HTTP clients send methods in capitals; signing the upper-case form spares a client
    # that wrote "get" a baffling mismatch.
    lines = (
        method.upper(),
        path,
        canonical_query(raw_query),
        str(timestamp),
        nonce,
        hashlib.sha256(body).hexdigest() if body else _EMPTY_SHA256,
    )
    # surrogatepass: a path or nonce as odd as the client sent still gives some bytes to
    # compare, and so a plain mismatch rather than an exception.
    return "\n".join(lines).encode("utf-8", "surrogatepass")


def sign(
    secret: str,
    method: str,
    path: str,
    raw_query: str,
    timestamp: int | str,
    nonce: str,
    body: bytes,
) -> str:
    """The base64 HMAC-SHA256 signature of the request under ``secret``."""
    message = string_to_sign(method, path, raw_query, timestamp, nonce, body)
    digest = hmac.digest(secret.encode("utf-8"), message, "sha256")  # OpenSSL's one-shot
    return base64.b64encode(digest).decode("ascii")


def signature_matches(
    secret: str,
    signature: str,
    method: str,
    path: str,
    raw_query: str,
    timestamp: int | str,
    nonce: str,
    body: bytes,
) -> bool:
    """Whether ``signature`` is the right one, compared in constant time."""
    expected = sign(secret, method, path, raw_query, timestamp, nonce, body)
    presented = signature.encode("utf-8", "surrogatepass")
    return hmac.compare_digest(expected.encode("ascii"), presented)


def signed_headers(
    channel: str,
    secret: str,
    method: str,
    path: str,
    *,
    query: str = "",
    body: bytes = b"",
    timestamp: int | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """The four ``X-GG-*`` headers a channel sends with this request (fresh nonce, now)."""
    if timestamp is None:
        timestamp = int(time.time())
    if nonce is None:
        nonce = secrets.token_urlsafe(24)  # 32 characters of [A-Za-z0-9_-], 192 bits
    elif not NONCE.fullmatch(nonce):
        raise ValueError("a nonce is 16-64 characters of [A-Za-z0-9_-]")
    return {
        HEADER_CHANNEL: channel,
        HEADER_TIMESTAMP: str(timestamp),
        HEADER_NONCE: nonce,
        HEADER_SIGNATURE: sign(secret, method, path, query, timestamp, nonce, body),
    }
