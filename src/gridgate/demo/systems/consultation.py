"""The demo consultation system (客户咨询系统): receives customers' questions."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

from pydantic import StringConstraints
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route

from gridgate.demo.data import DemoData, rfc3339
from gridgate.demo.systems._web import (
    CUSTOMER_NO_PATTERN,
    JSONResponse,
    build_system,
    read_body,
    utc_now,
)
from gridgate.errors import NotFound
from gridgate.schemas import StrictModel

__all__ = ["ConsultationCreate", "ConsultationDesk", "create_app"]

#: Consultations kept at most; the oldest are forgotten first (the demo keeps them in memory).
_KEPT = 10_000


class ConsultationCreate(StrictModel):
    """Body of ``POST /api/v1/consultations``."""

    topic: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
    content: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]
    customer_no: Annotated[str, StringConstraints(pattern=CUSTOMER_NO_PATTERN)] | None = None


class ConsultationDesk:
    """The consultations received, by id."""

    def __init__(self, data: DemoData, clock: Callable[[], datetime] = utc_now) -> None:
        self._data = data
        self._clock = clock
        self._by_id: dict[str, dict[str, Any]] = {}

    def receive(self, request: ConsultationCreate) -> dict[str, Any]:
        """Record a consultation, with the 户号 it names as named.

        The 户号 is not looked up: anyone may submit (level 0), so an answer that differed for
        an unknown 户号 would tell anyone which 户号 exist. Staff check it when they answer.
        """
        # Unguessable ids: anyone may read a consultation by its id (level 0 interface).
        consultation_id = f"ZX{secrets.token_hex(10).upper()}"
        record = {
            "consultation_id": consultation_id,
            "topic": request.topic,
            "content": request.content,
            "customer_no": request.customer_no,
            "status": "received",
            "created_at": rfc3339(self._clock()),
        }
        if len(self._by_id) >= _KEPT:
            del self._by_id[next(iter(self._by_id))]
        self._by_id[consultation_id] = record
        return record

    def get(self, consultation_id: str) -> dict[str, Any]:
        """A recorded consultation, or :class:`~gridgate.errors.NotFound`."""
        record = self._by_id.get(consultation_id)
        if record is None:
            raise NotFound(f"no consultation {consultation_id}")
        return record


def create_app(data: DemoData, *, clock: Callable[[], datetime] = utc_now) -> Starlette:
    """The consultation system's ASGI app (the 户号 a consultation names is not checked)."""
    desk = ConsultationDesk(data, clock)

    async def create(request: Request) -> JSONResponse:
        record = desk.receive(await read_body(request, ConsultationCreate))
        answer = {key: record[key] for key in ("consultation_id", "status", "created_at")}
        return JSONResponse(answer, status_code=201)

    async def read(request: Request) -> JSONResponse:
        return JSONResponse(desk.get(request.path_params["consultation_id"]))

    return build_system(
        "consultation",
        [
            Route("/api/v1/consultations", create, methods=["POST"]),
            Route("/api/v1/consultations/{consultation_id}", read, methods=["GET"]),
        ],
    )
