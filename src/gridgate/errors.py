"""Domain errors, and the one place that turns them into RFC 9457 problem+json answers.

Services raise these with the data a caller needs (``field``, ``retry_after`` …); only the
web layer, through :func:`problem_response` and :func:`install_problem_handlers`, makes HTTP
answers of them. The ``code`` of each error is part of the API contract (docs/api.md).
"""

from __future__ import annotations

from typing import Any, ClassVar

import orjson
import structlog
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import DataError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

__all__ = [
    "AuthRequired",
    "BadCredentials",
    "ChannelBadSignature",
    "ChannelError",
    "ChannelExpired",
    "ChannelIpDenied",
    "ChannelNotAuthorized",
    "ChannelReplayed",
    "ChannelUnknown",
    "ConfigurationError",
    "Conflict",
    "GridgateError",
    "HeadersTooLarge",
    "InternalSignatureInvalid",
    "InvalidRequest",
    "InvalidToken",
    "LevelRequired",
    "Locked",
    "MalformedRequest",
    "MethodNotAllowed",
    "NotBound",
    "NotFound",
    "NotReady",
    "Overloaded",
    "PermissionDenied",
    "RateLimited",
    "RefreshChannelMismatch",
    "RequestTimeout",
    "RequestTooLarge",
    "ServiceNotOwned",
    "ServiceUnavailable",
    "TooManyFailures",
    "UpstreamBadResponse",
    "UpstreamTimeout",
    "UpstreamUnavailable",
    "WeakPassword",
    "install_problem_handlers",
    "problem_response",
]

PROBLEM_CONTENT_TYPE = "application/problem+json"
_log = structlog.get_logger("gridgate.errors")


class ConfigurationError(Exception):
    """Settings that gridgate refuses to start with (never shown to API callers)."""


class GridgateError(Exception):
    """Base of every error that reaches a caller; subclasses fix ``code`` and ``status``."""

    code: ClassVar[str] = "internal"
    status: ClassVar[int] = 500
    title: ClassVar[str] = "Internal error"

    def __init__(self, detail: str | None = None, **extra: Any) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.extra = extra
        #: Extra response headers (``Retry-After``, ``WWW-Authenticate``).
        self.headers: dict[str, str] = {}


class InvalidRequest(GridgateError):
    """A value the caller sent is malformed or out of range; ``field`` names it."""

    code = "request.invalid"
    status = 422
    title = "Invalid request"

    def __init__(
        self, detail: str, *, field: str | None = None, errors: list[dict[str, Any]] | None = None
    ) -> None:
        extra: dict[str, Any] = {}
        if field is not None:
            extra["field"] = field
        if errors is not None:
            extra["errors"] = errors
        super().__init__(detail, **extra)


class RequestTooLarge(GridgateError):
    """The body is larger than the listener accepts."""

    code = "request.too_large"
    status = 413
    title = "Request body too large"


class MalformedRequest(GridgateError):
    """The bytes received are not an HTTP/1.1 request the gateway can read."""

    code = "request.malformed"
    status = 400
    title = "Malformed request"


class HeadersTooLarge(GridgateError):
    """The request line and headers are larger than the listener accepts."""

    code = "request.headers_too_large"
    status = 431
    title = "Request headers too large"


class RequestTimeout(GridgateError):
    """The request did not arrive in full within the listener's read timeout."""

    code = "request.timeout"
    status = 408
    title = "Request not received in time"


class NotFound(GridgateError):
    """No such resource."""

    code = "not_found"
    status = 404
    title = "Not found"


class MethodNotAllowed(GridgateError):
    """The resource exists but not with this method."""

    code = "request.method_not_allowed"
    status = 405
    title = "Method not allowed"


class Conflict(GridgateError):
    """The change clashes with existing data (duplicate code, still referenced …)."""

    code = "conflict"
    status = 409
    title = "Conflict"


class AuthRequired(GridgateError):
    """No credentials were presented."""

    code = "auth.required"
    status = 401
    title = "Authentication required"

    def __init__(self, detail: str | None = None, **extra: Any) -> None:
        super().__init__(detail, **extra)
        self.headers["WWW-Authenticate"] = "Bearer"


class InvalidToken(AuthRequired):
    """The presented token is malformed, expired or revoked."""

    code = "auth.invalid_token"
    title = "Invalid or expired token"


class BadCredentials(GridgateError):
    """User name and password do not match (deliberately not saying which)."""

    code = "auth.bad_credentials"
    status = 401
    title = "Bad credentials"


class Locked(GridgateError):
    """Too many failures: the path is locked for ``retry_after`` seconds."""

    code = "auth.locked"
    status = 423
    title = "Temporarily locked"

    def __init__(self, detail: str | None = None, *, retry_after: int) -> None:
        super().__init__(detail, retry_after=retry_after)
        self.headers["Retry-After"] = str(retry_after)


class PermissionDenied(GridgateError):
    """The caller is known but may not do this."""

    code = "perm.denied"
    status = 403
    title = "Permission denied"


class LevelRequired(GridgateError):
    """The caller's account level (认证等级) is below what the interface needs."""

    code = "perm.level_required"
    status = 403
    title = "Higher account level required"

    def __init__(self, detail: str | None = None, *, required_level: int) -> None:
        super().__init__(detail, required_level=required_level)


class ServiceNotOwned(PermissionDenied):
    """A registry write for a service the calling business system does not own (catalog)."""

    code = "registry.service_not_owned"
    title = "Service owned by another business system"

    def __init__(self, detail: str | None = None, *, service: str) -> None:
        super().__init__(detail, service=service)


class NotBound(GridgateError):
    """The request names a 户号 the caller's account has not bound (data scope)."""

    code = "perm.not_bound"
    status = 403
    title = "户号 not bound to this account"


class RefreshChannelMismatch(InvalidToken):
    """A refresh token presented by another channel than the one it was issued to."""

    code = "auth.channel_mismatch"
    title = "Token issued to another channel"


class InternalSignatureInvalid(GridgateError):
    """A call to a service behind the gateway without a valid ``X-GG-Internal`` signature."""

    code = "auth.internal_signature"
    status = 401
    title = "Internal signature missing or invalid"


class ChannelError(GridgateError):
    """Base of channel-authentication failures (each has its own code)."""

    status = 401


class ChannelUnknown(ChannelError):
    """No such channel, a disabled one, or the signing headers are missing (the detail says
    which: an unsigned request is not told that its channel is unknown)."""

    code = "channel.unknown"
    title = "Unsigned request or unknown channel"


class ChannelBadSignature(ChannelError):
    """The signature does not match the request and the channel's secret."""

    code = "channel.bad_signature"
    title = "Bad signature"


class ChannelExpired(ChannelError):
    """The timestamp is too far from the gateway's clock."""

    code = "channel.expired"
    title = "Request expired"


class ChannelReplayed(ChannelError):
    """The nonce was already used within the signing window."""

    code = "channel.replayed"
    title = "Request replayed"


class ChannelIpDenied(ChannelError):
    """The client address is outside the channel's allowed networks."""

    code = "channel.ip_denied"
    status = 403
    title = "Address not allowed for this channel"


class ChannelNotAuthorized(ChannelError):
    """The channel is not authorized to call this interface."""

    code = "channel.not_authorized"
    status = 403
    title = "Channel not authorized for this interface"


class _RetryLater(GridgateError):
    def __init__(self, detail: str | None = None, *, retry_after: int) -> None:
        super().__init__(detail, retry_after=retry_after)
        self.headers["Retry-After"] = str(retry_after)


class RateLimited(_RetryLater):
    """A rate limit of the channel or the interface is exhausted."""

    code = "flow.rate_limited"
    status = 429
    title = "Too many requests"


class TooManyFailures(_RetryLater):
    """Too many failed sign-ins from this address or for this user name: wait ``retry_after``.

    The same answer whether or not the user name exists, so a lock tells nothing about it.
    """

    code = "auth.too_many_failures"
    status = 429
    title = "Too many failed attempts"


class WeakPassword(InvalidRequest):
    """A new password is too short, common or breached, or contains the user name."""

    code = "auth.weak_password"
    title = "Password refused"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, field="password")


class Overloaded(_RetryLater):
    """The wait queue is full or the wait ran out (R12, R24)."""

    code = "flow.overloaded"
    status = 503
    title = "Overloaded"


class NotReady(_RetryLater):
    """The listener is starting and cannot answer yet (catalog not loaded)."""

    code = "service.starting"
    status = 503
    title = "Starting"


class ServiceUnavailable(_RetryLater):
    """A store the gateway needs for every signed request (Redis) cannot be reached."""

    code = "service.unavailable"
    status = 503
    title = "Service unavailable"

    def __init__(self, detail: str | None = None, *, retry_after: int = 1) -> None:
        super().__init__(detail, retry_after=retry_after)


class UpstreamUnavailable(GridgateError):
    """No instance of the business system could take the call."""

    code = "upstream.unavailable"
    status = 503
    title = "Business system unavailable"


class UpstreamTimeout(GridgateError):
    """The business system did not answer within the interface's timeout."""

    code = "upstream.timeout"
    status = 504
    title = "Business system timed out"


class UpstreamBadResponse(GridgateError):
    """The business system's answer could not be used."""

    code = "upstream.bad_response"
    status = 502
    title = "Bad answer from business system"


_BY_STATUS: dict[int, type[GridgateError]] = {
    404: NotFound,
    405: MethodNotAllowed,
    413: RequestTooLarge,
}


def problem_body(error: GridgateError, trace_id: str | None) -> dict[str, Any]:
    """The JSON document of a problem answer."""
    body: dict[str, Any] = {
        "type": f"urn:gridgate:error:{error.code}",
        "title": error.title,
        "status": error.status,
        "detail": error.detail,
        "code": error.code,
        "trace_id": trace_id,
    }
    body.update(error.extra)
    return body


def problem_response(error: GridgateError, trace_id: str | None = None) -> Response:
    """Render ``error`` as an ``application/problem+json`` response."""
    return Response(
        orjson.dumps(problem_body(error, trace_id)),
        status_code=error.status,
        media_type=PROBLEM_CONTENT_TYPE,
        headers=error.headers,
    )


def _trace_id(request: Request) -> str | None:
    value = request.scope.get("state", {}).get("trace_id")
    return value if isinstance(value, str) else None


async def _on_gridgate_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GridgateError)  # noqa: S101 - registered for this class only
    return problem_response(exc, _trace_id(request))


async def _on_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)  # noqa: S101 - registered for this class only
    kind = _BY_STATUS.get(exc.status_code)
    if kind is not None:
        error: GridgateError = kind()
    elif 400 <= exc.status_code < 500:
        error = InvalidRequest(str(exc.detail))
    else:
        error = GridgateError()
    return problem_response(error, _trace_id(request))


def _field_of(location: tuple[Any, ...] | list[Any]) -> str | None:
    parts = [str(part) for part in location]
    if parts and parts[0] in {"body", "query", "path", "header", "cookie"}:
        parts = parts[1:]
    return ".".join(parts) or None


async def _on_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)  # noqa: S101 - registered for this class only
    # Describe each problem by field and message only: the rejected input may be a secret.
    errors = [
        {
            "field": _field_of(err.get("loc", ())),
            "message": err.get("msg", "invalid"),
            "type": err.get("type", "invalid"),
        }
        for err in exc.errors()
    ]
    if any(err["type"] == "json_invalid" for err in errors):
        error = InvalidRequest("the body is not valid JSON", errors=errors)
    else:
        first = errors[0] if errors else {"field": None, "message": "invalid request"}
        detail = str(
            f"{first['field']}: {first['message']}" if first["field"] else first["message"]
        )
        error = InvalidRequest(detail, field=first["field"], errors=errors)
    return problem_response(error, _trace_id(request))


async def _on_data_error(request: Request, exc: Exception) -> Response:
    # The database refused a value the validation let through (an encoding, a range): the
    # caller's input is at fault, and nothing was stored since the transaction rolled back.
    _log.warning(
        "database_refused_value", trace_id=_trace_id(request), error_type=type(exc).__name__
    )
    return problem_response(
        InvalidRequest("a value was refused by the database"), _trace_id(request)
    )


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    # A 500 is a bug: log it with the trace id so it can be found, tell the caller nothing more.
    _log.error(
        "unhandled_error",
        trace_id=_trace_id(request),
        path=request.url.path,
        error_type=type(exc).__name__,
        exc_info=exc,
    )
    return problem_response(GridgateError(), _trace_id(request))


def install_problem_handlers(app: Starlette) -> None:
    """Make every error raised inside ``app`` answer as problem+json."""
    app.add_exception_handler(GridgateError, _on_gridgate_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(DataError, _on_data_error)
    app.add_exception_handler(HTTPException, _on_http_exception)
    app.add_exception_handler(Exception, _on_unexpected)
