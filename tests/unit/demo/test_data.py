"""The demo data generator: deterministic, plausible, and consistent with the tariff."""

from __future__ import annotations

import calendar
import re
from collections import Counter
from datetime import date, datetime
from decimal import Decimal

import pytest

from gridgate.demo.data import (
    FIRST_CUSTOMER_NO,
    FIRST_CUSTOMER_PHONE,
    DemoData,
    default_reference_month,
    generate_demo_data,
    parse_month,
)
from gridgate.demo.tariff import monthly_charge, tiers_for


@pytest.fixture(scope="module")
def data() -> DemoData:
    """The default data set (read only in this module)."""
    return generate_demo_data()


def test_the_same_seed_gives_the_same_data(data: DemoData) -> None:
    assert generate_demo_data() == data


def test_another_seed_gives_other_data(data: DemoData) -> None:
    other = generate_demo_data(seed=7)
    assert [c.name for c in other.customers.values()] != [c.name for c in data.customers.values()]


def test_the_first_customer_is_the_one_demo_json_names(data: DemoData) -> None:
    first = next(iter(data.customers.values()))
    assert first.customer_no == FIRST_CUSTOMER_NO == "3300000001"
    assert first.reserved_phone == FIRST_CUSTOMER_PHONE == "13800000001"
    assert first.voltage == "220V"
    assert first.supply_region == "浙江省/杭州市/西湖区"
    # It owes exactly its latest bill, so a payment walkthrough always has a bill to pay.
    assert [bill.month for bill in first.bills.values() if not bill.paid] == ["2026-10"]


def test_the_first_customer_is_fixed_whatever_the_seed() -> None:
    first = generate_demo_data(seed=1, customer_count=3).customers[FIRST_CUSTOMER_NO]
    assert first.reserved_phone == FIRST_CUSTOMER_PHONE


def test_the_default_data_bills_the_twelve_months_before_the_reference_date(
    data: DemoData,
) -> None:
    assert default_reference_month() == data.reference_month == "2026-10"
    assert data.months == (
        "2025-11",
        "2025-12",
        *(f"2026-{month:02d}" for month in range(1, 11)),
    )
    assert (data.usage_start, data.usage_end) == (date(2025, 11, 1), date(2026, 10, 31))


def test_customer_numbers_are_unique_ten_digit_zhejiang_numbers(data: DemoData) -> None:
    numbers = [customer.customer_no for customer in data.customers.values()]
    assert len(numbers) == 300
    assert len(set(numbers)) == 300
    assert all(re.fullmatch(r"33\d{8}", number) for number in numbers)


def test_customers_have_plausible_contact_data(data: DemoData) -> None:
    customers = list(data.customers.values())
    phones = [customer.reserved_phone for customer in customers]
    assert len(set(phones)) == len(phones)
    assert all(re.fullmatch(r"1[358]\d{9}", phone) for phone in phones)
    assert all(2 <= len(customer.name) <= 3 for customer in customers)
    passwords = [customer.service_password for customer in customers]
    assert all(re.fullmatch(r"\d{6}", password) for password in passwords)
    assert len(set(passwords)) > 250
    for customer in customers:
        district = customer.supply_region.split("/")[-1]
        assert district in customer.address
        assert "号" in customer.address


def test_customers_spread_over_regions_voltages_and_meter_books(data: DemoData) -> None:
    customers = list(data.customers.values())
    regions = Counter(customer.supply_region for customer in customers)
    assert len(regions) >= 6
    assert len({region.split("/")[1] for region in regions}) >= 3
    voltages = Counter(customer.voltage for customer in customers)
    assert voltages["220V"] > 0.75 * len(customers)
    assert voltages["380V"] > 0
    assert 0 < voltages["10kV"] < voltages["380V"]
    books = Counter(customer.meter_book for customer in customers)
    assert all(re.fullmatch(r"[A-Z]{4}-\d{4}", book) for book in books)
    assert 10 < len(books) < len(customers) / 3
    codes = {region.path: region.code for region in data.regions}
    assert all(c.meter_book.startswith(codes[c.supply_region] + "-") for c in customers)


def test_every_customer_has_twelve_bills_whose_usage_is_the_daily_usage(data: DemoData) -> None:
    for customer in list(data.customers.values())[:50]:
        assert tuple(customer.bills) == data.months
        for month, bill in customer.bills.items():
            year, number = parse_month(month)
            last = calendar.monthrange(year, number)[1]
            days = data.daily_usage(customer, date(year, number, 1), date(year, number, last))
            assert bill.usage_kwh == Decimal(sum(round(kwh * 10) for _, kwh in days)) / 10
            assert bill.amount == sum(line.amount for line in bill.lines)
            assert bill.customer_no == customer.customer_no


def test_bills_are_charged_against_the_usage_since_january(data: DemoData) -> None:
    customer = data.customers[FIRST_CUSTOMER_NO]
    this_year = [bill for bill in customer.bills.values() if bill.month.startswith("2026-")]
    before = Decimal(0)
    for bill in this_year:
        expected = monthly_charge(bill.usage_kwh, before, tiers_for(customer.voltage))
        assert (bill.lines, bill.amount) == (expected.lines, expected.amount)
        before += bill.usage_kwh
    # A typical household reaches the second tier during the year.
    assert any(line.tier == 2 for bill in this_year for line in bill.lines)


def test_usage_is_higher_in_summer_and_winter_than_in_spring(data: DemoData) -> None:
    def total(month: str) -> Decimal:
        return sum((c.bills[month].usage_kwh for c in data.customers.values()), Decimal(0))

    assert total("2026-08") > total("2026-04") * Decimal("1.4")
    assert total("2026-01") > total("2026-04") * Decimal("1.2")


def test_most_bills_are_paid_and_the_latest_is_often_open(data: DemoData) -> None:
    customers = list(data.customers.values())
    latest_open = sum(not c.bills["2026-10"].paid for c in customers)
    older_open = sum(not b.paid for c in customers for m, b in c.bills.items() if m != "2026-10")
    assert 0.3 * len(customers) < latest_open < 0.9 * len(customers)
    assert older_open < 0.03 * 11 * len(customers)


def test_daily_usage_is_clipped_to_the_data_range(data: DemoData) -> None:
    customer = data.customers[FIRST_CUSTOMER_NO]
    days = data.daily_usage(customer, date(2025, 1, 1), date(2025, 11, 3))
    assert [day for day, _ in days] == [date(2025, 11, 1), date(2025, 11, 2), date(2025, 11, 3)]
    everything = data.daily_usage(customer, data.usage_start, data.usage_end)
    assert len(everything) == 365
    assert all(kwh > 0 for _, kwh in everything)


def test_outages_are_spread_over_regions_with_rfc3339_times(data: DemoData) -> None:
    assert len({outage.region for outage in data.outages}) >= 6
    assert len({outage.outage_id for outage in data.outages}) == len(data.outages)
    for outage in data.outages:
        shaped = outage.to_json()
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", shaped["start"])
        start = datetime.fromisoformat(shaped["start"])
        end = datetime.fromisoformat(shaped["end"])
        assert start < end
        assert outage.region.split("/")[-1] in outage.affected_area
        assert outage.reason


def test_the_reference_month_moves_the_data() -> None:
    data = generate_demo_data(customer_count=5, reference_month="2024-02")
    assert data.months[0] == "2023-03"
    assert data.months[-1] == "2024-02"
    assert data.usage_end == date(2024, 2, 29)
    customer = data.customers[FIRST_CUSTOMER_NO]
    assert len(data.daily_usage(customer, data.usage_start, data.usage_end)) == 366


@pytest.mark.parametrize(
    "month", ["2026-13", "2026-00", "2026-1", "202610", "", "2026-10-01", "2026-10\n"]
)
def test_a_malformed_reference_month_is_refused(month: str) -> None:
    with pytest.raises(ValueError, match="YYYY-MM"):
        generate_demo_data(customer_count=1, reference_month=month)


def test_the_profile_never_carries_the_service_password(data: DemoData) -> None:
    customer = data.customers[FIRST_CUSTOMER_NO]
    assert customer.service_password not in str(customer.profile().values())
    assert "service_password" not in customer.profile()
    assert customer.service_password not in repr(customer)
