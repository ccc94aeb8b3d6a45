"""The demo notices system (停电公告系统): planned outages, filtered by power-supply region."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route

from gridgate.demo.data import DemoData
from gridgate.demo.systems._web import JSONResponse, build_system, page_of, page_params
from gridgate.errors import InvalidRequest

__all__ = ["create_app"]

_MAX_REGION = 64


def create_app(data: DemoData) -> Starlette:
    """The notices system's ASGI app over ``data``."""
    # Newest first, like every list a customer reads.
    newest_first = sorted(data.outages, key=lambda outage: outage.start, reverse=True)

    async def outages(request: Request) -> JSONResponse:
        region = (request.query_params.get("region") or "").strip()
        if len(region) > _MAX_REGION:
            raise InvalidRequest(f"region is at most {_MAX_REGION} characters", field="region")
        page, page_size = page_params(request, default_size=20)
        items = [
            outage.to_json() for outage in newest_first if not region or outage.in_region(region)
        ]
        return JSONResponse(page_of(items, page, page_size))

    return build_system("notices", [Route("/api/v1/notices/outages", outages, methods=["GET"])])
