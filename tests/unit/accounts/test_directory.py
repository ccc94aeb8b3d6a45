"""The marketing directory: what the accounts service makes of marketing's answers."""

from __future__ import annotations

import httpx
import pytest

from gridgate.accounts.directory import MarketingDirectory
from gridgate.demo.data import FIRST_CUSTOMER_NO, generate_demo_data
from gridgate.demo.systems.marketing import create_app
from gridgate.errors import TooManyFailures

DATA = generate_demo_data(customer_count=5)


async def test_marketings_own_limit_becomes_a_wait_not_an_error() -> None:
    app = create_app(DATA, failures_per_customer=1, customer_window_s=120)
    directory = MarketingDirectory(
        None, base_url="http://marketing.test", transport=httpx.ASGITransport(app=app)
    )
    try:
        assert not await directory.service_password_matches(FIRST_CUSTOMER_NO, "wrong!")
        with pytest.raises(TooManyFailures) as refused:
            await directory.service_password_matches(FIRST_CUSTOMER_NO, "wrong!")
    finally:
        await directory.aclose()
    assert refused.value.status == 429 and refused.value.headers["Retry-After"] == "120"
