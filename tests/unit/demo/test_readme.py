"""The README's journey names a customer, a month and an amount: the demo data must have them."""

from __future__ import annotations

import re
from pathlib import Path

from gridgate.demo.data import FIRST_CUSTOMER_NO, default_reference_month, generate_demo_data
from gridgate.demo.tariff import money_str

README = Path(__file__).resolve().parents[3] / "README.md"


def test_the_readme_pays_the_first_customers_last_bill_as_the_demo_data_has_it() -> None:
    text = README.read_text(encoding="utf-8")
    month = default_reference_month()
    customer = generate_demo_data().customer(FIRST_CUSTOMER_NO)
    assert customer is not None
    amount = money_str(customer.bills[month].amount)
    # The payment step's body, and the bills step's month.
    body = f'"customer_no": "{FIRST_CUSTOMER_NO}", "bill_month": "{month}", "amount": "{amount}"'
    assert body in text
    assert f"bills?month={month}" in text
    # No other month is quoted for a payment.
    assert set(re.findall(r'"bill_month": "([0-9-]+)"', text)) == {month}
