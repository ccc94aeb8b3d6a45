"""The tiered residential tariff: tier boundaries, rounding and money strings."""

from __future__ import annotations

from decimal import Decimal

import pytest

from gridgate.demo.tariff import (
    BillLine,
    bill_lines,
    money_str,
    monthly_charge,
    tiers_for,
)


def _lines(usage: str | int, before: str | int) -> list[tuple[int, str, str]]:
    return [
        (line.tier, str(line.kwh), money_str(line.amount))
        for line in bill_lines(Decimal(usage), Decimal(before))
    ]


def test_usage_inside_the_first_tier_is_one_line_at_the_first_price() -> None:
    assert _lines(100, 0) == [(1, "100", "53.80")]


def test_usage_ending_exactly_on_the_first_boundary_stays_in_the_first_tier() -> None:
    assert _lines(2760, 0) == [(1, "2760", "1484.88")]


def test_a_month_crossing_the_first_boundary_is_split_between_two_tiers() -> None:
    assert _lines(100, 2700) == [(1, "60", "32.28"), (2, "40", "23.52")]
    assert monthly_charge(100, 2700).amount == Decimal("55.80")


def test_a_month_crossing_both_boundaries_has_three_lines() -> None:
    charge = monthly_charge(2200, 2700)
    assert [(line.tier, line.kwh) for line in charge.lines] == [
        (1, Decimal(60)),
        (2, Decimal(2040)),
        (3, Decimal(100)),
    ]
    assert money_str(charge.amount) == "1315.60"


def test_a_month_starting_on_a_boundary_is_charged_in_the_next_tier() -> None:
    assert _lines(10, 2760) == [(2, "10", "5.88")]
    assert _lines(10, 4800) == [(3, "10", "8.38")]


def test_a_month_crossing_the_second_boundary_is_split_between_tiers_two_and_three() -> None:
    assert _lines(300, 4700) == [(2, "100", "58.80"), (3, "200", "167.60")]


def test_fractional_kwh_cross_a_boundary_exactly() -> None:
    assert _lines("1.0", "2759.5") == [(1, "0.5", "0.27"), (2, "0.5", "0.29")]


def test_amounts_round_half_up_to_the_cent() -> None:
    # 12.5 kWh x 0.538 = 6.725: banker's rounding would give 6.72.
    assert _lines("12.5", 0) == [(1, "12.5", "6.73")]


def test_the_amount_is_the_sum_of_the_rounded_lines() -> None:
    charge = monthly_charge(Decimal("100.5"), Decimal("2700.3"))
    assert charge.amount == sum(line.amount for line in charge.lines)


def test_no_usage_means_no_lines_and_nothing_to_pay() -> None:
    charge = monthly_charge(0, 1234)
    assert charge.lines == ()
    assert money_str(charge.amount) == "0.00"


def test_negative_usage_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        bill_lines(-1, 0)
    with pytest.raises(ValueError, match="negative"):
        bill_lines(1, -1)


def test_money_strings_always_have_two_decimals() -> None:
    assert money_str(Decimal("12.3")) == "12.30"
    assert money_str(Decimal(0)) == "0.00"
    assert money_str(Decimal("0.005")) == "0.01"
    assert money_str(Decimal("1E+3")) == "1000.00"


def test_voltage_classes_have_their_own_tables() -> None:
    assert tiers_for("220V")[0].price == Decimal("0.538")
    assert tiers_for("380V") == tiers_for("220V")
    assert tiers_for("10kV")[0].price < tiers_for("220V")[0].price
    assert tiers_for("35kV") == tiers_for("220V")
    assert money_str(monthly_charge(100, 0, tiers_for("10kV")).amount) == "51.80"


def test_a_line_is_shaped_with_money_as_strings() -> None:
    line = BillLine(2, Decimal("40.5"), Decimal("0.588"), Decimal("23.81"))
    assert line.to_json() == {"tier": 2, "kwh": 40.5, "price": "0.588", "amount": "23.81"}
