"""Channel request signing (渠道请求签名): HMAC-SHA256 over the request, as fixed by api.md.

The gateway verifies with :func:`verified_query` (or :func:`signature_matches`); channel apps
and tests sign with :func:`signed_headers`. Both sides share :func:`string_to_sign`, so they
cannot drift apart.

One canonical query (api.md "Channel request signing"): the signature covers the
CANONICAL_QUERY, and the gateway forwards exactly that string to the business system in place
of the query as sent. Whatever two queries sign alike, the business system reads alike:

- the query is taken as bytes (as sent on the wire; a client's text is its UTF-8);
- pairs are split on ``&`` (empty segments carry no pair and are dropped), name and value on
  the first ``=`` (no ``=`` means an empty value, forwarded as ``name=``);
- decoding is plain percent-decoding of bytes: ``+`` stays a literal ``+`` (re-encoded as
  ``%2B``, so the business system reads a plus, never a space); a ``%`` not followed by two
  hex digits is a literal ``%`` (``%25``); bytes that are not UTF-8 are kept as they are;
- every byte outside ``A-Za-z0-9-_.~`` is re-encoded as ``%XX`` with upper-case hex;
- pairs are sorted by the re-encoded name, then the re-encoded value (plain ASCII order, the
  same in every language).

The vectors in ``tests/vectors/signing.json`` pin this down for every implementation.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from urllib.parse import quote_from_bytes, unquote_to_bytes

__all__ = [
    "HEADER_CHANNEL",
    "HEADER_NONCE",
    "HEADER_SIGNATURE",
    "HEADER_SYSTEM",
    "HEADER_TIMESTAMP",
    "NONCE",
    "WINDOW_S",
    "canonical_query",
    "sign",
    "signature_matches",
    "signed_headers",
    "string_to_sign",
    "verified_query",
]

HEADER_CHANNEL = "X-GG-Channel"
#: Names a business system calling in its own name, in place of ``X-GG-Channel`` (api.md).
HEADER_SYSTEM = "X-GG-System"
HEADER_TIMESTAMP = "X-GG-Timestamp"
HEADER_NONCE = "X-GG-Nonce"
HEADER_SIGNATURE = "X-GG-Signature"

#: What a nonce may look like (api.md). Check with ``fullmatch``: ``$`` alone lets a newline in.
NONCE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
#: How far (seconds) a request's timestamp may be from the gateway's clock, either way.
WINDOW_S = 300

# RFC 3986 unreserved characters besides letters and digits, which quote() always keeps.
_UNRESERVED = "-_.~"


def _recode(part: bytes) -> str:
    return quote_from_bytes(unquote_to_bytes(part), safe=_UNRESERVED)


_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def canonical_query(raw_query: str | bytes) -> str:
    """The CANONICAL_QUERY of api.md for a query as sent (without the ``?``).

    ``bytes`` are the query as received; a ``str`` is a client's text and counts as its
    UTF-8 (``surrogateescape`` characters as the bytes they stand for).
    """
    if not raw_query:
        return ""
    raw = (
        raw_query if isinstance(raw_query, bytes) else raw_query.encode("utf-8", "surrogateescape")
    )
    pairs: list[tuple[str, str]] = []
    for segment in raw.split(b"&"):
        if not segment:
            continue
        name, _, value = segment.partition(b"=")
        pairs.append((_recode(name), _recode(value)))
    pairs.sort()
    return "&".join(f"{name}={value}" for name, value in pairs)


def string_to_sign(
    method: str, path: str, raw_query: str | bytes, timestamp: int | str, nonce: str, body: bytes
) -> bytes:
    """The exact bytes a channel signs for this request."""
    return _string_to_sign(method, path, canonical_query(raw_query), timestamp, nonce, body)


def _string_to_sign(
    method: str, path: str, canonical: str, timestamp: int | str, nonce: str, body: bytes
) -> bytes:
    # HTTP clients send methods in capitals; signing the upper-case form spares a client
    # that wrote "get" a baffling mismatch.
    lines = (
        method.upper(),
        path,
        canonical,
        str(timestamp),
        nonce,
        hashlib.sha256(body).hexdigest() if body else _EMPTY_SHA256,
    )
    # surrogatepass: a path or nonce as odd as the client sent still gives some bytes to
    # compare, and so a plain mismatch rather than an exception.
    return "\n".join(lines).encode("utf-8", "surrogatepass")


def _hmac(secret: str, message: bytes) -> str:
    digest = hmac.digest(secret.encode("utf-8"), message, "sha256")  # OpenSSL's one-shot
    return base64.b64encode(digest).decode("ascii")


def sign(
    secret: str,
    method: str,
    path: str,
    raw_query: str | bytes,
    timestamp: int | str,
    nonce: str,
    body: bytes,
) -> str:
    """The base64 HMAC-SHA256 signature of the request under ``secret``."""
    return _hmac(secret, string_to_sign(method, path, raw_query, timestamp, nonce, body))


def verified_query(
    secret: str,
    signature: str,
    method: str,
    path: str,
    raw_query: str | bytes,
    timestamp: int | str,
    nonce: str,
    body: bytes,
) -> str | None:
    """The canonical query when ``signature`` is right (compared in constant time), else None.

    The gateway forwards this query, not the one as sent: the business system then reads
    exactly what the channel signed.
    """
    canonical = canonical_query(raw_query)
    expected = _hmac(secret, _string_to_sign(method, path, canonical, timestamp, nonce, body))
    presented = signature.encode("utf-8", "surrogatepass")
    return canonical if hmac.compare_digest(expected.encode("ascii"), presented) else None


def signature_matches(
    secret: str,
    signature: str,
    method: str,
    path: str,
    raw_query: str | bytes,
    timestamp: int | str,
    nonce: str,
    body: bytes,
) -> bool:
    """Whether ``signature`` is the right one, compared in constant time."""
    found = verified_query(secret, signature, method, path, raw_query, timestamp, nonce, body)
    return found is not None


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
    system: bool = False,
) -> dict[str, str]:
    """The four ``X-GG-*`` headers a channel sends with this request (fresh nonce, now).

    ``query`` is the query exactly as the request sends it (without the ``?``); the business
    system receives its canonical form (:func:`canonical_query`). With ``system=True`` a
    business system signs: ``channel`` is its code, ``secret`` its password, and the code goes
    in ``X-GG-System`` (api.md "System-to-system calls").
    """
    if timestamp is None:
        timestamp = int(time.time())
    if nonce is None:
        nonce = secrets.token_urlsafe(24)  # 32 characters of [A-Za-z0-9_-], 192 bits
    elif not NONCE.fullmatch(nonce):
        raise ValueError("a nonce is 16-64 characters of [A-Za-z0-9_-]")
    return {
        HEADER_SYSTEM if system else HEADER_CHANNEL: channel,
        HEADER_TIMESTAMP: str(timestamp),
        HEADER_NONCE: nonce,
        HEADER_SIGNATURE: sign(secret, method, path, query, timestamp, nonce, body),
    }
