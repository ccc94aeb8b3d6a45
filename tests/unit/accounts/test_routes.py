"""The channel-facing account interfaces are all routed by the demo catalog."""

from __future__ import annotations

from fastapi.routing import APIRoute

from gridgate.accounts.app import SERVICES
from gridgate.accounts.routes import router
from gridgate.demo.catalog import INTERFACES


def test_every_account_interface_has_a_demo_catalog_entry() -> None:
    served = {
        (method, route.path)
        for route in router.routes
        if isinstance(route, APIRoute)
        for method in route.methods or ()
    }
    routed = {(i.method, i.path) for i in INTERFACES if i.provider in SERVICES}
    assert served, "no routes found"
    # The demo gateway answers 404 for an interface the catalog does not have.
    assert served - routed == set()
    assert routed - served == set()
