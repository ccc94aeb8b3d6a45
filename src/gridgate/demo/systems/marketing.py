"""The demo marketing system (营销业务系统): customer master data of each 户号.

``/api/v1/customers/{customer_no}`` is the channel-facing interface of api.md; the
``/internal/v1`` routes serve the accounts service, which proves control of a 户号 with its
service password (服务密码). The service password itself never leaves this system.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from pydantic import StringConstraints
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route

from gridgate.demo.data import DemoData
from gridgate.demo.systems._web import JSONResponse, build_system, customer_of, read_body
from gridgate.schemas import StrictModel

__all__ = ["ServicePasswordCheck", "create_app"]


class ServicePasswordCheck(StrictModel):
    """Body of ``verify-service-password``."""

    service_password: Annotated[str, StringConstraints(max_length=64)]


def create_app(data: DemoData) -> Starlette:
    """The marketing system's ASGI app over ``data``."""

    async def profile(request: Request) -> JSONResponse:
        customer = customer_of(data, request.path_params["customer_no"])
        return JSONResponse(customer.profile())

    async def verify_service_password(request: Request) -> JSONResponse:
        customer = customer_of(data, request.path_params["customer_no"])
        check = await read_body(request, ServicePasswordCheck)
        # Constant time: the answer must not leak how many leading digits were right.
        valid = hmac.compare_digest(
            check.service_password.encode(), customer.service_password.encode()
        )
        return JSONResponse({"valid": valid})

    return build_system(
        "marketing",
        [
            Route("/api/v1/customers/{customer_no}", profile, methods=["GET"]),
            Route("/internal/v1/customers/{customer_no}", profile, methods=["GET"]),
            Route(
                "/internal/v1/customers/{customer_no}/verify-service-password",
                verify_service_password,
                methods=["POST"],
            ),
        ],
    )
