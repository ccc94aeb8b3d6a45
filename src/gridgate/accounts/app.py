"""The accounts listener: the channel-facing account interfaces and the JWKS for gateways.

Only the gateway calls the account interfaces: every call but the probes and the JWKS must
carry the gateway's ``X-GG-Internal`` signature for service ``accounts`` or ``permissions``
(the listener registers under both names), else 401 ``auth.internal_signature``.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp

from gridgate.accounts.parts import AccountsParts
from gridgate.accounts.routes import router
from gridgate.errors import install_problem_handlers
from gridgate.internal_auth import OPEN_PATHS, InternalAuthMiddleware, InternalVerifier
from gridgate.web.health import probe_routes
from gridgate.web.middleware import wrap_listener

__all__ = ["JWKS_PATH", "SERVICES", "build_accounts"]

JWKS_PATH = "/.well-known/jwks.json"
#: The registry services this listener answers for (the menus are service ``permissions``).
SERVICES = ("accounts", "permissions")
#: Real-name uploads carry an image of up to 5 MiB plus the form around it.
_MAX_BODY = 6 * 1024 * 1024


def build_accounts(parts: AccountsParts) -> ASGIApp:
    """The accounts service's ASGI app."""
    app = FastAPI(title="gridgate accounts", docs_url=None, redoc_url=None)
    install_problem_handlers(app)
    app.state.accounts = parts
    app.state.runtime = parts.runtime
    app.include_router(router)

    async def jwks(_request: Request) -> JSONResponse:
        async with parts.runtime.db.transaction() as session:
            document = await parts.keys.jwks(session)
            if not document["keys"]:
                # First start: make the first key now so gateways can verify from the outset.
                await parts.keys.rotate(session)
                document = await parts.keys.jwks(session)
        return JSONResponse(document, headers={"Cache-Control": "max-age=60"})

    routes = [
        *probe_routes("accounts", {"database": parts.runtime.db.ping}),
        Route(JWKS_PATH, jwks, methods=["GET"]),
    ]
    for route in routes:
        assert isinstance(route, Route)  # noqa: S101 - plain routes
        app.add_api_route(route.path, route.endpoint, methods=["GET"], include_in_schema=False)
    verifier = InternalVerifier.for_services(
        parts.runtime.internal_keys,
        SERVICES,
        max_skew_s=parts.runtime.settings.internal_auth_max_skew_s,
    )
    # Gateways fetch the JWKS before they can verify anything: it stays open, as the probes.
    guarded = InternalAuthMiddleware(app, verifier, open_paths=OPEN_PATHS | {JWKS_PATH})
    return wrap_listener(guarded, "accounts", _MAX_BODY)
