"""The demo business systems behind api.md's business interfaces, one ASGI app each.

Each module has a factory ``create_app(data)``; every system serves the interface paths
unchanged (the gateway forwards them as sent), ``/healthz`` and problem+json errors. The
factories hold the business logic only: where a system runs as a service
(:func:`gridgate.demo.runner.demo_listeners`), it is wrapped in
:class:`gridgate.internal_auth.InternalAuthMiddleware`, so only calls signed for it pass.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import ASGIApp

from gridgate.demo.data import DemoData
from gridgate.demo.systems import billing, consultation, marketing, notices, payment

__all__ = ["SYSTEMS"]

#: Factory of each demo business system, by its code in the demo catalog.
SYSTEMS: dict[str, Callable[[DemoData], ASGIApp]] = {
    "marketing": marketing.create_app,
    "billing": billing.create_app,
    "payment": payment.create_app,
    "notices": notices.create_app,
    "consultation": consultation.create_app,
}
