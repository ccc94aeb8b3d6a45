"""The registry listener's HTTP API (api.md, /registry/v1), thin over a :class:`RegistryStore`.

Plain Starlette with orjson: heartbeats and look-ups are the hot calls of the service center.
Every write checks that the caller owns the service (:mod:`gridgate.registry.ownership`).
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict
from typing import Any, NoReturn

import orjson
import structlog
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from gridgate.errors import (
    GridgateError,
    InvalidRequest,
    PermissionDenied,
    ServiceNotOwned,
    problem_response,
)
from gridgate.registry.auth import CallerAuth
from gridgate.registry.interfaces import (
    Change,
    ForeignInstance,
    Instance,
    Registration,
    RegistryStore,
    UnknownInstance,
    check_service,
)
from gridgate.registry.ownership import Operation, Refusal
from gridgate.web.middleware import trace_id_of

__all__ = ["MAX_WATCH_S", "FastRoutes", "registry_routes"]

_log = structlog.get_logger("gridgate.registry")

#: The longest a watch call waits for a change (api.md: long-poll up to 30 s).
MAX_WATCH_S = 30.0
MAX_CACHED_ANSWERS = 10_000
_REGISTER_FIELDS = frozenset({"service", "host", "port", "weight", "metadata", "zone"})


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


def instance_json(instance: Instance) -> dict[str, Any]:
    """An instance as the API shows it."""
    return {
        "instance_id": instance.instance_id,
        "service": instance.service,
        "host": instance.host,
        "port": instance.port,
        "weight": instance.weight,
        "zone": instance.zone,
        "metadata": instance.metadata,
        "healthy": instance.healthy,
    }


def _change_json(change: Change) -> dict[str, Any]:
    return {
        "revision": change.revision,
        "kind": change.kind,
        "service": change.service,
        "instance_id": change.instance_id,
        "instance": instance_json(change.instance) if change.instance else None,
    }


async def _body(request: Request) -> dict[str, Any]:
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        raise InvalidRequest("the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object")
    unknown = sorted(set(body) - _REGISTER_FIELDS)
    if unknown:
        raise InvalidRequest(f"unknown field {unknown[0]!r}", field=unknown[0])
    return body


def _number(request: Request, name: str, default: float, low: float, high: float) -> float:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = float(raw.encode("ascii"))  # "١٢": UnicodeEncodeError, a ValueError
    except ValueError:
        raise InvalidRequest(f"{name} must be a number", field=name) from None
    if not low <= value <= high:
        raise InvalidRequest(f"{name} must be from {low:g} to {high:g}", field=name)
    return value


async def _refuse(
    auth: CallerAuth,
    request: Request,
    system: str,
    operation: Operation,
    service: str,
    *,
    host: str,
    port: int,
    instance_id: str | None = None,
) -> NoReturn:
    """Audit a refused write and answer 403: which one depends on who owns ``service``."""
    error: GridgateError
    if await auth.owns(system, service):  # another owner's instance of a shared service
        error = PermissionDenied("the instance belongs to another business system")
    else:
        error = ServiceNotOwned(
            f"service {service!r} does not belong to business system {system!r}",
            service=service,
        )
    await auth.refused(
        Refusal(
            system=system,
            operation=operation,
            service=service,
            code=error.code,
            instance_id=instance_id,
            host=host,
            port=port,
            client_ip=request.client.host if request.client else None,
            trace_id=trace_id_of(request.scope),
        )
    )
    raise error


async def _refuse_on(
    auth: CallerAuth, request: Request, system: str, operation: Operation, instance: Instance
) -> NoReturn:
    """:func:`_refuse` a write to an existing instance."""
    await _refuse(
        auth,
        request,
        system,
        operation,
        instance.service,
        host=instance.host,
        port=instance.port,
        instance_id=instance.instance_id,
    )


async def _registration(request: Request, owner: str) -> Registration:
    """The checked registration in the request's body."""
    body = await _body(request)
    if "service" not in body or "host" not in body or "port" not in body:
        missing = next(f for f in ("service", "host", "port") if f not in body)
        raise InvalidRequest(f"{missing} is required", field=missing)
    return Registration.checked(
        body["service"],
        body["host"],
        body["port"],
        weight=body.get("weight", 100),
        zone=body.get("zone"),
        metadata=body.get("metadata"),
        owner=owner,
    )


def _write_routes(store: RegistryStore, auth: CallerAuth, prefix: str) -> list[BaseRoute]:
    """Register, heartbeat and deregister: business systems, each on the services it owns."""
    interval = store.timings.heartbeat_interval_s

    async def register(request: Request) -> Response:
        owner = await auth.business_system(request.headers.get("authorization"))
        reg = await _registration(request, owner)
        if not await auth.owns(owner, reg.service):
            await _refuse(
                auth, request, owner, "register", reg.service, host=reg.host, port=reg.port
            )
        instance = await store.register(
            reg.service,
            reg.host,
            reg.port,
            weight=reg.weight,
            zone=reg.zone,
            metadata=reg.metadata,
            owner=owner,
        )
        return _json({"instance_id": instance.instance_id, "heartbeat_interval_s": interval}, 201)

    async def heartbeat(request: Request) -> Response:
        owner = await auth.business_system(request.headers.get("authorization"))
        instance_id = request.path_params["instance_id"]
        try:
            # The owner is checked in the same step: another system's heartbeat changes nothing.
            instance = await store.heartbeat(instance_id, owner=owner)
        except ForeignInstance as foreign:
            await _refuse_on(auth, request, owner, "heartbeat", foreign.instance)
        if not await auth.owns(owner, instance.service):
            # Registered before the catalog gave the service to another system (or before
            # ownership was checked at all): such an instance must not live on.
            with contextlib.suppress(UnknownInstance):
                await store.deregister(instance_id)
            await _refuse_on(auth, request, owner, "heartbeat", instance)
        return Response(status_code=204)

    async def deregister(request: Request) -> Response:
        owner = await auth.business_system(request.headers.get("authorization"))
        instance_id = request.path_params["instance_id"]
        found = await store.get(instance_id)
        # A system may always remove its own instances: removing cannot steal calls.
        if found is not None and found.owner != owner:
            await _refuse_on(auth, request, owner, "deregister", found)
        await store.deregister(instance_id)
        return Response(status_code=204)

    return [
        Route(f"{prefix}/instances", register, methods=["POST"]),
        Route(f"{prefix}/instances/{{instance_id}}/heartbeat", heartbeat, methods=["PUT"]),
        Route(f"{prefix}/instances/{{instance_id}}", deregister, methods=["DELETE"]),
    ]


def registry_routes(store: RegistryStore, auth: CallerAuth) -> list[BaseRoute]:
    """The routes of the registry API bound to ``store`` and ``auth``."""
    prefix = "/registry/v1"

    async def services(request: Request) -> Response:
        await auth.reader(request.headers.get("authorization"))
        items = [asdict(summary) for summary in await store.services()]
        return _json({"items": items, "total": len(items)})

    # Discovery answers by (service, healthy_only), valid while the store's revision holds:
    # heartbeats do not move it, so a steady registry answers most look-ups from here.
    answers: dict[tuple[str, bool], tuple[int, bytes]] = {}

    async def instances(request: Request) -> Response:
        await auth.reader(request.headers.get("authorization"))
        service = check_service(request.path_params["service"])
        healthy_only = request.query_params.get("healthy_only", "true").lower() != "false"
        key = (service, healthy_only)
        cached = answers.get(key)
        if cached is not None and cached[0] == await store.revision():
            return Response(cached[1], media_type="application/json")
        revision, found = await store.instances(service, healthy_only=healthy_only)
        body = orjson.dumps(
            {
                "service": service,
                "revision": revision,
                "instances": [instance_json(i) for i in found],
            }
        )
        if len(answers) >= MAX_CACHED_ANSWERS:
            answers.clear()
        answers[key] = (revision, body)
        return Response(body, media_type="application/json")

    async def watch(request: Request) -> Response:
        await auth.reader(request.headers.get("authorization"))
        service = request.query_params.get("service")
        if service is not None:
            check_service(service)
        revision = int(_number(request, "revision", 0, 0, 2**62))
        timeout = _number(request, "timeout", MAX_WATCH_S, 0, MAX_WATCH_S)
        changes = await store.wait_for_changes(revision, timeout_s=timeout)
        items = [c for c in changes.changes if service is None or c.service == service]
        return _json(
            {
                "revision": changes.revision,
                "snapshot": changes.snapshot,
                "changes": [_change_json(c) for c in items],
            }
        )

    async def nodes(request: Request) -> Response:
        await auth.reader(request.headers.get("authorization"))
        items = [{"node_id": n.node_id, "url": n.url} for n in await store.nodes()]
        return _json({"items": items, "total": len(items)})

    return [
        *_write_routes(store, auth, prefix),
        Route(f"{prefix}/services", services, methods=["GET"]),
        Route(f"{prefix}/services/{{service}}/instances", instances, methods=["GET"]),
        Route(f"{prefix}/watch", watch, methods=["GET"]),
        Route(f"{prefix}/nodes", nodes, methods=["GET"]),
    ]


class FastRoutes:
    """Dispatches the registry routes without Starlette's router and middleware layers.

    Heartbeats and look-ups are the registry's hot calls, and the benchmark showed a node
    spending its time in the per-request stack rather than in the registry. Matching routes
    are called directly (errors still become problem+json); anything else — probes, a wrong
    method, unknown paths — goes to ``fallback``, the full Starlette app.
    """

    def __init__(self, routes: list[BaseRoute], fallback: ASGIApp) -> None:
        self.fallback = fallback
        self._table = [
            (route, frozenset(route.methods or ()), route.path_regex)
            for route in routes
            if isinstance(route, Route)
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path, method = scope["path"], scope["method"]
            for route, methods, regex in self._table:
                found = regex.match(path)
                if found is not None and method in methods:
                    scope["path_params"] = found.groupdict()
                    scope["route"] = route  # the metrics label is the route's template
                    await self._call(route, scope, receive, send)
                    return
        await self.fallback(scope, receive, send)

    async def _call(self, route: Route, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        try:
            response = await route.endpoint(request)
        except GridgateError as error:
            response = problem_response(error, trace_id_of(scope))
        except Exception as error:  # a bug: the same answer the Starlette app would give
            _log.error(
                "registry_error",
                path=scope["path"],
                error_type=type(error).__name__,
                exc_info=error,
            )
            response = problem_response(GridgateError(), trace_id_of(scope))
        await response(scope, receive, send)
