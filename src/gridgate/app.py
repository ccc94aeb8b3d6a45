"""Builds the ASGI app of each role from a :class:`~gridgate.runtime.Runtime`."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
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
from gridgate.gateway.plane import EngineListener
from gridgate.gateway.service import GatewayParts, Job
from gridgate.logs.routes import router as logs_router
from gridgate.logs.service import LogParts
from gridgate.operators.limits import SignInLimits
from gridgate.operators.routes import router as operators_router
from gridgate.permissions.routes import router as permissions_router
from gridgate.registry.node import node_tasks
from gridgate.registry.routes import FastRoutes, registry_routes
from gridgate.runtime import Runtime
from gridgate.server import ListenerApp
from gridgate.settings import Settings
from gridgate.web.deps import ADMIN_PREFIX
from gridgate.web.health import Check, Verdict, probe_routes
from gridgate.web.metrics import CATCH_ALL
from gridgate.web.middleware import (
    API_SECURITY_HEADERS,
    SecurityHeadersMiddleware,
    wrap_listener,
)

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
#: A registration is a few hundred bytes; nothing bigger belongs on the registry listener.
_REGISTRY_MAX_BODY = 64 * 1024


_ANY_METHOD = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


async def _not_found(_request: Request) -> None:
    raise NotFound("nothing is served at this path")


def _swagger_ui_page() -> tuple[bytes, str]:
    """Swagger UI's page, and a Content-Security-Policy that lets exactly it run.

    Its script and style files come from this listener (``fastapi-offline``, no CDN); the one
    inline script that starts it is allowed by its hash, computed from the page FastAPI
    writes, so a FastAPI upgrade that changes the script keeps working. Swagger UI sets
    inline styles and draws its icons from ``data:`` URLs, hence those two allowances; no
    ``unsafe-inline`` for scripts and no ``unsafe-eval``.
    """
    page = get_swagger_ui_html(
        openapi_url="/admin/openapi.json",
        title="gridgate admin API",
        swagger_js_url=f"{_DOCS_ASSETS}/swagger-ui-bundle.js",
        swagger_css_url=f"{_DOCS_ASSETS}/swagger-ui.css",
        swagger_favicon_url=f"{_DOCS_ASSETS}/favicon.png",
        # No badge fetched from validator.swagger.io: nothing leaves the closed network.
        swagger_ui_parameters={"validatorUrl": None},
    )
    body = bytes(page.body)
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(script).digest()).decode() + "'"
        for script in re.findall(rb"<script>(.*?)</script>", body, flags=re.DOTALL)
    )
    policy = (
        f"default-src 'none'; script-src 'self' {hashes}; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    )
    return body, policy


_ADMIN_SUMMARY = (
    "Operating the gridgate channel access platform: catalog, permissions, operators, "
    "the accounts back office, real-name review, analytics and the audit trail."
)
#: One line per tag of the admin API, so the document's front page says what all of it does.
_ADMIN_DESCRIPTION = """\
Every endpoint needs an operator token from `POST /admin/v1/session` (except that one); the
roles `admin`, `reviewer` and `auditor` decide what each may do. Changes are audited.

- **session**: sign in and out, and who the token belongs to.
- **business systems**, **channels**, **interfaces**, **components**: the catalog the
  gateway enforces (channel secrets, interface authorizations, flow control, levels).
- **permissions**: menus, functions, interface permissions and field rules per channel.
- **operators**: back-office operators and their roles.
- **accounts**: search the unified accounts and their 360 view and trajectory.
- **real-name**: review real-name applications.
- **analytics**: hourly traffic, failures by error code, top failing interfaces and
  authentication failures, as the access-log analysis wrote them.
- **audit**: the audit trail of every change, newest first.
"""


def build_admin(runtime: Runtime, accounts: AccountsParts | None = None) -> ASGIApp:
    """The operator-facing listener: admin API, OpenAPI document and Swagger UI."""
    app = FastAPI(
        title="gridgate admin API",
        version=gridgate.__version__,
        summary=_ADMIN_SUMMARY,
        description=_ADMIN_DESCRIPTION,
        openapi_url="/admin/openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    install_problem_handlers(app)
    app.state.runtime = runtime
    app.state.accounts = parts = accounts or AccountsParts.build(runtime)
    # Operator sign-ins are counted in the attempt store customer sign-in uses (memory, or
    # Redis shared by every admin node).
    app.state.operator_limits = SignInLimits.from_settings(parts.attempts, runtime.settings)
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

    docs_page, docs_policy = _swagger_ui_page()

    @app.get("/admin/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return HTMLResponse(docs_page, headers={"Content-Security-Policy": docs_policy})

    # Outermost, so that every answer has them, refusals of the listener middleware included.
    return SecurityHeadersMiddleware(
        wrap_listener(app, "admin", runtime.settings.admin_max_body_bytes),
        headers=API_SECURITY_HEADERS,
        no_store_prefix=ADMIN_PREFIX,
    )


def build_gateway(runtime: Runtime, parts: GatewayParts | None = None) -> ListenerApp:
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

    app: ListenerApp
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

        checks: dict[str, Check] = {"database": runtime.db.ping, "catalog": catalog_loaded}
        if parts.logs.shared:
            checks["log_pipeline"] = _log_pipeline_check(parts.logs, settings)

        def gateway_jobs(urls: Mapping[str, str]) -> list[Job]:
            return parts.jobs(
                registries(urls),
                jwks_url=urls["accounts"] + JWKS_PATH if "accounts" in urls else None,
                log_pipeline=log_pipeline,
            )

        # The Rust engine serves the socket, probes included; this process feeds it.
        listener = EngineListener(parts, checks)
        return RoleApp(listener, lambda urls: [*gateway_jobs(urls), *listener.jobs()])
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
_LAG_CHECK_TIMEOUT_S = 1.0


def _log_pipeline_check(logs: LogParts, settings: Settings) -> Check:
    """The gateway's ``log_pipeline`` check: whether ``gridgate serve logs`` keeps up with the
    shared buffer (:meth:`LogParts.state`). A warning past ``log_lag_warning_s`` or when records
    were trimmed unread; failing only past ``log_lag_fail_s`` when set (customers are served
    without the log pipeline)."""

    async def check() -> Verdict:
        try:
            state = await asyncio.wait_for(
                logs.state(warning_s=settings.log_lag_warning_s, fail_s=settings.log_lag_fail_s),
                _LAG_CHECK_TIMEOUT_S,
            )
        except Exception as exc:  # Redis away: say so, the gateway stays up
            return Verdict("warning", f"log buffer unreadable ({type(exc).__name__})")
        return Verdict(state.status, state.detail)

    return check


def build_app(role: str, runtime: Runtime) -> ListenerApp:
    """The ASGI app of ``role``."""
    return build_role(role, runtime).app
