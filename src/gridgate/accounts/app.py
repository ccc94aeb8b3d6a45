"""The accounts listener: the channel-facing account interfaces and the JWKS for gateways."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp

from gridgate.accounts.parts import AccountsParts
from gridgate.accounts.routes import router
from gridgate.errors import install_problem_handlers
from gridgate.web.health import probe_routes
from gridgate.web.middleware import wrap_listener

__all__ = ["JWKS_PATH", "build_accounts"]

JWKS_PATH = "/.well-known/jwks.json"
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
    return wrap_listener(app, "accounts", _MAX_BODY)
