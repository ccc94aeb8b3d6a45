"""Fixtures of the functional tests."""

from tests.functional.accounts_harness import accounts, backoffice, parts
from tests.functional.gateway_harness import gateway, upstreams

__all__ = ["accounts", "backoffice", "gateway", "parts", "upstreams"]
