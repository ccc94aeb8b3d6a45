"""The map of demo business systems."""

from __future__ import annotations

import httpx

from gridgate.demo.data import DemoData
from gridgate.demo.systems import SYSTEMS


async def test_every_demo_system_is_built_and_answers_its_health_probe(data: DemoData) -> None:
    assert set(SYSTEMS) == {"marketing", "billing", "payment", "notices", "consultation"}
    for name, factory in SYSTEMS.items():
        transport = httpx.ASGITransport(app=factory(data))
        async with httpx.AsyncClient(transport=transport, base_url="http://demo.test") as http:
            answer = await http.get("/healthz")
        assert answer.status_code == 200
        assert answer.json() == {"status": "ok", "listener": f"demo-{name}"}
