"""Builds the ASGI app of each role from a :class:`~gridgate.runtime.Runtime`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp

import gridgate
from gridgate.accounts.admin_routes import router as accounts_admin_router
from gridgate.accounts.app import JWKS_PATH, build_accounts
from gridgate.accounts.parts import AccountsParts
from gridgate.catalog.routes import router as catalog_router
from gridgate.errors import NotFound, install_problem_handlers
from gridgate.gateway.service import GatewayParts, Job
from gridgate.logs.routes import router as logs_router
from gridgate.logs.service import LogParts
from gridgate.operators.routes import router as operators_router
from gridgate.permissions.routes import router as permissions_router
from gridgate.registry.node import node_tasks
from gridgate.registry.routes import FastRoutes, registry_routes
from gridgate.runtime import Runtime
from gridgate.web.health import probe_routes
from gridgate.web.metrics import CATCH_ALL
from gridgate.web.middleware import wrap_listener

__all__ = [
    "ROLES",
    "RoleApp",
    "build_admin",
    "build_app",
    "build_gateway",
    "build_registry",
    "build_role",
]

_DOCS_ASSETS = "/admin/static/docs"
#: Bodies the channel-facing listener accepts until the gateway sets its own limits.
_DEFAULT_MAX_BODY = 1_048_576
#: A registration is a few hundred bytes; nothing bigger belongs on the registry listener.
_REGISTRY_MAX_BODY = 64 * 1024


_ANY_METHOD = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


async def _not_found(_request: Request) -> None:
    raise NotFound("nothing is served at this path")


def build_admin(runtime: Runtime, accounts: AccountsParts | None = None) -> ASGIApp:
    """The operator-facing listener: admin API, OpenAPI document and Swagger UI."""
    app = FastAPI(
        title="gridgate admin API",
        version=gridgate.__version__,
        summary="Catalog, operators and audit of the gridgate channel access platform.",
        openapi_url="/admin/openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    install_problem_handlers(app)
    app.state.runtime = runtime
    app.state.accounts = accounts or AccountsParts.build(runtime)
    app.include_router(operators_router)
    app.include_router(catalog_router)
    app.include_router(accounts_admin_router)
    app.include_router(logs_router)
    app.include_router(permissions_router)
    for route in probe_routes("admin", {"database": runtime.db.ping}):
        # As API routes (outside the schema) so metrics see their template like any other.
        assert isinstance(route, Route)  # noqa: S101 - probe_routes builds plain routes
        app.add_api_route(route.path, route.endpoint, methods=["GET"], include_in_schema=False)
    # Swagger UI from files installed with gridgate: a closed network has no CDN.
    assets = resources.files("fastapi_offline") / "static"
    app.mount(_DOCS_ASSETS, StaticFiles(directory=str(assets)), name="docs-assets")

    @app.get("/admin/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/admin/openapi.json",
            title="gridgate admin API",
            swagger_js_url=f"{_DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{_DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{_DOCS_ASSETS}/favicon.png",
        )

    return wrap_listener(app, "admin", runtime.settings.admin_max_body_bytes)


def build_gateway(runtime: Runtime, parts: GatewayParts | None = None) -> ASGIApp:
    """The channel-facing listener (unified service entry): the request path of the gateway."""
    return build_role("gateway", runtime, gateway=parts).app


def build_registry(runtime: Runtime) -> ASGIApp:
    """The service-center listener (R1): registration, discovery, watch, nodes."""
    routes = registry_routes(runtime.registry, runtime.registry_auth)
    app = Starlette(
        routes=[
            *probe_routes(
                "registry", {"database": runtime.db.ping, "registry_store": runtime.registry.ping}
            ),
            *routes,
            Route(CATCH_ALL, _not_found, methods=_ANY_METHOD),
        ]
    )
    install_problem_handlers(app)
    app.state.runtime = runtime
    return wrap_listener(FastRoutes(routes, app), "registry", _REGISTRY_MAX_BODY)


def _no_jobs(_urls: Mapping[str, str]) -> list[Job]:
    return []


@dataclass(slots=True)
class RoleApp:
    """A role's ASGI app, and its background jobs once the listeners' URLs are known."""

    app: ASGIApp
    #: Given the URL of each role's listener in this process (``registry``, ``accounts`` …).
    jobs: Callable[[Mapping[str, str]], list[Job]] = _no_jobs


def build_role(
    role: str,
    runtime: Runtime,
    *,
    gateway: GatewayParts | None = None,
    accounts: AccountsParts | None = None,
    log_pipeline: bool | None = None,
) -> RoleApp:
    """The app and jobs of ``role``; ``log_pipeline`` makes the gateway batch and analyse its
    access log itself (default: only where the log buffer is its own spool)."""
    settings = runtime.settings

    def registries(urls: Mapping[str, str]) -> list[str]:
        return settings.registry_urls or [urls["registry"]]

    if role == "gateway":
        parts = gateway or GatewayParts.build(runtime)
        runtime.catalog_listeners.append(parts.holder.notify)

        async def catalog_loaded() -> bool:
            return parts.holder.current.revision >= 0

        probes = Starlette(
            routes=probe_routes("gateway", {"database": runtime.db.ping, "catalog": catalog_loaded})
        )
        # The gateway's own server answers the request path; the probes keep the listener
        # middleware (trace ids, listener metrics) like every other listener's.
        gateway_app = parts.app(wrap_listener(probes, "gateway", settings.gateway_max_body_bytes))
        return RoleApp(
            gateway_app,
            lambda urls: parts.jobs(
                registries(urls),
                jwks_url=urls["accounts"] + JWKS_PATH if "accounts" in urls else None,
                log_pipeline=log_pipeline,
            ),
        )
    if role == "registry":
        return RoleApp(
            build_registry(runtime),
            lambda urls: node_tasks(
                runtime.registry, settings.registry_advertise_url or urls["registry"]
            ),
        )
    if role == "logs":
        # The log pipeline's batcher and analysis on their own, over the buffer the gateways
        # append to (Redis: a spool is one process's own); the listener only answers probes.
        logs = LogParts.build(runtime)
        if not logs.shared:
            raise ValueError(
                "the logs role reads the log buffer every gateway shares: set GRIDGATE_REDIS_URL "
                "(without it each gateway batches and analyses its own spool)"
            )
        probes = Starlette(routes=probe_routes("logs", {"database": runtime.db.ping}))
        return RoleApp(wrap_listener(probes, "logs", 1024), lambda _urls: logs.jobs(append=False))
    if role in {"admin", "accounts"}:
        found = accounts or AccountsParts.build(runtime)
        app = build_admin(runtime, found) if role == "admin" else build_accounts(found)
        # Jobs only once per process, even when admin and accounts share the parts.
        shared = accounts is not None and role == "admin"
        return RoleApp(app, _no_jobs if shared else lambda urls: found.jobs(registries(urls)))
    raise ValueError(f"unknown role {role!r}")


ROLES = ("gateway", "admin", "registry", "accounts", "logs")


def build_app(role: str, runtime: Runtime) -> ASGIApp:
    """The ASGI app of ``role``."""
    return build_role(role, runtime).app
