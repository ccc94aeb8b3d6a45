"""Fixtures of the functional tests."""

from tests.functional.gateway_harness import gateway, upstreams

__all__ = ["gateway", "upstreams"]
