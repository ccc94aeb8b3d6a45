"""Trust between the gateway and the services behind it: the signed ``X-GG-Internal`` header.

The gateway tells a business system (and the accounts service) who is calling in ``X-GG-*``
headers. Anyone who reaches a service's address directly could send such headers too, so
the gateway signs each call, and services refuse calls without a valid signature (api.md,
"Calls from the gateway"):

    X-GG-Internal: v1;<service>;<unix seconds>;<hex HMAC-SHA256>

    string_to_sign = "v1" "\\n" SERVICE "\\n" TIMESTAMP "\\n" METHOD "\\n" TARGET "\\n" HEADERS
    HEADERS        = for each signed header, sorted by name: name ":" value "\\n"

- ``TARGET`` is the request target exactly as sent: the raw path, and ``?`` with the raw
  query when there is one. Nothing is decoded or reordered: the service verifies the bytes
  it will read.
- The signed headers are every ``x-gg-*`` header except ``x-gg-internal`` itself, and
  ``x-trace-id``; names in lower case, values as sent. A service recomputes the list from
  what it received, so a header added on the way (a forged ``X-GG-Account``) breaks the
  signature, and a signed header sent twice is refused.
- The key is per service, derived from the platform secret (``GRIDGATE_SECRET_KEY``):
  ``master = HMAC-SHA256(secret, "gridgate/internal-auth/v1")``,
  ``key = HMAC-SHA256(master, service)``. A business system holds only its own key
  (``gridgate internal-key <service>``), so it can neither call another system in the
  gateway's name nor sign for the accounts service.

The body is not covered: the signature authenticates the caller and the identity it vouches
for, against callers who reach a service directly. Against someone on the network path,
use TLS between the zones.
"""

from __future__ import annotations

import hmac
import re
import time
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence

import httpx
import structlog
from starlette.types import ASGIApp, Receive, Scope, Send

from gridgate.errors import InternalSignatureInvalid, problem_response
from gridgate.web.middleware import trace_id_of

__all__ = [
    "HEADER",
    "MAX_SKEW_S",
    "OPEN_PATHS",
    "InternalAuth",
    "InternalAuthMiddleware",
    "InternalKeys",
    "InternalSigner",
    "InternalVerifier",
    "header_value",
    "internal_headers",
    "is_signed_header",
    "string_to_sign",
]

_log = structlog.get_logger("gridgate.internal_auth")

#: The header's name (lower case, as in ASGI scopes and the gateway's header lists).
HEADER = "x-gg-internal"
VERSION = "v1"
#: Default distance between the signer's clock and the verifier's, either way (seconds).
MAX_SKEW_S = 60
#: What every listener answers without a signature: the probes.
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
_LABEL = b"gridgate/internal-auth/v1"
_SIGNED_PLAIN = frozenset({"x-trace-id"})
_TIMESTAMP = re.compile(r"[0-9]{1,12}")  # ASCII digits only: str.isdigit takes "²"
_SIGNATURE = re.compile(r"[0-9a-f]{64}")


def is_signed_header(name: str) -> bool:
    """Whether the header ``name`` (lower case) is covered by the signature."""
    return (name.startswith("x-gg-") and name != HEADER) or name in _SIGNED_PLAIN


def _signed_lines(headers: Iterable[tuple[str, str]]) -> str:
    """HEADERS of the string to sign; a signed header present twice is refused."""
    chosen: dict[str, str] = {}
    for name, value in headers:
        lowered = name.lower()
        if not is_signed_header(lowered):
            continue
        if lowered in chosen:
            raise InternalSignatureInvalid(f"the signed header {lowered} is present twice")
        chosen[lowered] = value.strip()
    return "".join(f"{name}:{chosen[name]}\n" for name in sorted(chosen))


def string_to_sign(
    service: str, timestamp: int | str, method: str, target: str, headers: Iterable[tuple[str, str]]
) -> bytes:
    """The exact bytes the gateway signs for one call to ``service``."""
    text = f"{VERSION}\n{service}\n{timestamp}\n{method.upper()}\n{target}\n"
    # Latin-1 maps each character back to the byte that was on the wire.
    return (text + _signed_lines(headers)).encode("latin-1", "replace")


class InternalKeys:
    """The per-service keys derived from the platform secret (the same in every role)."""

    def __init__(self, secret: bytes) -> None:
        self._master = hmac.digest(secret, _LABEL, "sha256")
        self._by_service: dict[str, bytes] = {}

    def for_service(self, service: str) -> bytes:
        """The key of ``service`` (a registry service name, such as ``billing``)."""
        key = self._by_service.get(service)
        if key is None:
            key = self._by_service[service] = hmac.digest(
                self._master, service.encode("utf-8"), "sha256"
            )
        return key


def header_value(
    key: bytes,
    service: str,
    method: str,
    target: str,
    headers: Iterable[tuple[str, str]],
    *,
    timestamp: int | None = None,
) -> str:
    """The ``X-GG-Internal`` value of a call to ``service`` (now, unless ``timestamp``)."""
    when = int(time.time()) if timestamp is None else timestamp
    return f"{VERSION};{service};{when};{_signature(key, service, when, method, target, headers)}"


def _signature(
    key: bytes,
    service: str,
    timestamp: int,
    method: str,
    target: str,
    headers: Iterable[tuple[str, str]],
) -> str:
    message = string_to_sign(service, timestamp, method, target, headers)
    return hmac.digest(key, message, "sha256").hex()


def internal_headers(
    key: bytes,
    service: str,
    method: str,
    target: str,
    identity: Mapping[str, str],
    *,
    timestamp: int | None = None,
) -> dict[str, str]:
    """``identity`` (``{"X-GG-Account": …}``) plus its ``X-GG-Internal``: for tests and tools
    that call a service as the gateway would."""
    pairs = [(name.lower(), value) for name, value in identity.items()]
    value = header_value(key, service, method, target, pairs, timestamp=timestamp)
    return {**identity, "X-GG-Internal": value}


class InternalSigner:
    """Signs the gateway's (or a platform service's) calls to services."""

    def __init__(self, keys: InternalKeys) -> None:
        self.keys = keys

    def sign(
        self, service: str, method: str, target: str, headers: Sequence[tuple[str, str]]
    ) -> str:
        """The ``X-GG-Internal`` value for a call to ``service`` with these headers."""
        return header_value(self.keys.for_service(service), service, method, target, headers)


class InternalVerifier:
    """Checks ``X-GG-Internal`` for the services one listener serves."""

    def __init__(
        self,
        keys: Mapping[str, bytes],
        *,
        max_skew_s: int = MAX_SKEW_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``keys``: the key of each service this listener answers for."""
        self.keys = dict(keys)
        self.max_skew_s = max_skew_s
        self.clock = clock

    @classmethod
    def for_services(
        cls, keys: InternalKeys, services: Iterable[str], *, max_skew_s: int = MAX_SKEW_S
    ) -> InternalVerifier:
        """A verifier of a platform role, which derives its keys from the platform secret."""
        return cls({s: keys.for_service(s) for s in services}, max_skew_s=max_skew_s)

    def verify(self, method: str, target: str, headers: Sequence[tuple[str, str]]) -> str:
        """The service the call was signed for; :class:`InternalSignatureInvalid` otherwise."""
        found = [value for name, value in headers if name.lower() == HEADER]
        if not found:
            raise InternalSignatureInvalid("this service is called through the gateway only")
        if len(found) > 1:
            raise InternalSignatureInvalid("X-GG-Internal is present twice")
        parts = found[0].strip().split(";")
        if len(parts) != 4 or parts[0] != VERSION:
            raise InternalSignatureInvalid("X-GG-Internal is malformed")
        _, service, timestamp, signature = parts
        key = self.keys.get(service)
        if key is None:
            raise InternalSignatureInvalid("the call was signed for another service")
        if not _TIMESTAMP.fullmatch(timestamp) or not _SIGNATURE.fullmatch(signature):
            raise InternalSignatureInvalid("X-GG-Internal is malformed")
        when = int(timestamp)
        if abs(self.clock() - when) > self.max_skew_s:
            raise InternalSignatureInvalid("the internal signature has expired")
        expected = _signature(key, service, when, method, target, headers)
        if not hmac.compare_digest(expected, signature):
            raise InternalSignatureInvalid("the internal signature does not match")
        return service


def _target(scope: Scope) -> str:
    raw: bytes = scope.get("raw_path") or scope["path"].encode("utf-8")
    query: bytes = scope.get("query_string", b"")
    target = raw + b"?" + query if query else raw
    return target.decode("latin-1")


class InternalAuthMiddleware:
    """Refuse every HTTP request without a valid ``X-GG-Internal`` (401
    ``auth.internal_signature``), except on ``open_paths``."""

    def __init__(
        self,
        app: ASGIApp,
        verifier: InternalVerifier,
        *,
        open_paths: Iterable[str] = OPEN_PATHS,
    ) -> None:
        self.app = app
        self.verifier = verifier
        self.open_paths = frozenset(open_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.open_paths:
            await self.app(scope, receive, send)
            return
        headers = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in scope["headers"]]
        try:
            service = self.verifier.verify(scope["method"], _target(scope), headers)
        except InternalSignatureInvalid as error:
            client = scope.get("client")
            trace_id = trace_id_of(scope)
            # Someone inside the network called a service directly: worth a look.
            _log.warning(
                "internal_signature_refused",
                reason=error.detail,
                path=scope["path"],
                client_ip=client[0] if client else None,
                trace_id=trace_id,
            )
            await problem_response(error, trace_id)(scope, receive, send)
            return
        scope.setdefault("state", {})["internal_service"] = service
        await self.app(scope, receive, send)


class InternalAuth(httpx.Auth):
    """Signs an httpx client's calls to ``service`` (the accounts service calling marketing)."""

    def __init__(self, signer: InternalSigner, service: str) -> None:
        self.signer = signer
        self.service = service

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Add ``X-GG-Internal`` to the request."""
        target = request.url.raw_path.decode("latin-1")
        headers = [
            (name.decode("latin-1"), value.decode("latin-1")) for name, value in request.headers.raw
        ]
        request.headers["X-GG-Internal"] = self.signer.sign(
            self.service, request.method, target, headers
        )
        yield request
