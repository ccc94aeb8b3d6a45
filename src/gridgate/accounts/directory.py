"""What the accounts service asks the marketing business system (营销系统) about a 户号.

The reserved phone and the service password live in marketing, not in gridgate: binding asks
marketing through the service center, like any other caller would.
"""

from __future__ import annotations

import re

import httpx

from gridgate.accounts.interfaces import CustomerDirectory, CustomerRecord
from gridgate.errors import TooManyFailures, UpstreamUnavailable
from gridgate.registry.client import Discovery

__all__ = ["CustomerDirectory", "CustomerRecord", "MarketingDirectory"]

_SECONDS = re.compile(r"[0-9]{1,5}")  # ASCII digits, never an absurd wait


class MarketingDirectory:
    """Calls the marketing system's internal API on an instance found through discovery."""

    def __init__(
        self,
        discovery: Discovery | None,
        *,
        service: str = "marketing",
        timeout_s: float = 3.0,
        base_url: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        auth: httpx.Auth | None = None,
    ) -> None:
        """Find marketing through ``discovery``, or call ``base_url`` directly when given;
        ``auth`` signs each call (``X-GG-Internal``: marketing serves the platform only)."""
        self.discovery = discovery
        self.service = service
        self.base_url = base_url
        self._http = httpx.AsyncClient(timeout=timeout_s, transport=transport, auth=auth)

    async def _call(
        self, method: str, path: str, json: dict[str, str] | None = None
    ) -> httpx.Response:
        if self.base_url is not None or self.discovery is None:
            if self.base_url is None:
                raise UpstreamUnavailable("no marketing system is configured")
            try:
                return await self._http.request(method, self.base_url + path, json=json)
            except httpx.TransportError:
                raise UpstreamUnavailable("the marketing system cannot be reached") from None
        tried: list[str] = []
        for _ in range(2):
            instance = self.discovery.choose(self.service, exclude=tried)
            if instance is None:
                break
            tried.append(instance.instance_id)
            try:
                answer = await self._http.request(method, instance.url + path, json=json)
            except httpx.TransportError:
                self.discovery.report(instance.instance_id, ok=False)
                continue
            self.discovery.report(instance.instance_id, ok=answer.status_code < 500)
            if answer.status_code < 500:
                return answer
        raise UpstreamUnavailable("the marketing system cannot be reached")

    async def customer(self, customer_no: str) -> CustomerRecord | None:
        """The 户号's record from ``GET /internal/v1/customers/{no}``."""
        answer = await self._call("GET", f"/internal/v1/customers/{customer_no}")
        if answer.status_code in (404, 422):
            return None
        answer.raise_for_status()
        data = answer.json()
        return CustomerRecord(
            customer_no=data["customer_no"],
            name=data["name"],
            reserved_phone=data["reserved_phone"],
            supply_region=data["supply_region"],
            meter_book=data["meter_book"],
            voltage=data["voltage"],
            address=data["address"],
        )

    async def service_password_matches(self, customer_no: str, password: str) -> bool:
        """Ask marketing to check the service password (it never leaves marketing)."""
        answer = await self._call(
            "POST",
            f"/internal/v1/customers/{customer_no}/verify-service-password",
            json={"service_password": password},
        )
        if answer.status_code in (404, 422):
            return False
        if answer.status_code == 429:
            # Marketing's own limit on its check (it must not be an unlimited oracle either).
            retry = answer.headers.get("retry-after", "")
            raise TooManyFailures(
                "too many service-password checks; try again later",
                retry_after=int(retry) if _SECONDS.fullmatch(retry) else 60,
            )
        answer.raise_for_status()
        return bool(answer.json().get("valid"))

    async def aclose(self) -> None:
        """Close the HTTP pool."""
        await self._http.aclose()
