"""Zhejiang-style tiered residential tariff (阶梯电价) of the demo billing system.

Tiers are annual: each month is charged against the usage already accumulated since the
1 January before it, so a month that crosses a tier boundary is split into two bill lines.
Money is :class:`~decimal.Decimal`, rounded to 0.01 yuan half-up, and leaves as a decimal
string ("123.45"), as api.md requires.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

__all__ = [
    "TARIFFS",
    "BillLine",
    "MonthlyCharge",
    "Tier",
    "bill_lines",
    "money",
    "money_str",
    "monthly_charge",
    "tiers_for",
]

_CENT = Decimal("0.01")
_ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class Tier:
    """One tier: its number, the annual kWh it reaches up to (None: no limit) and its price."""

    number: int
    upper_kwh: Decimal | None
    price: Decimal


@dataclass(frozen=True, slots=True)
class BillLine:
    """The part of one month's usage charged in one tier."""

    tier: int
    kwh: Decimal
    price: Decimal
    amount: Decimal

    def to_json(self) -> dict[str, Any]:
        """The line as api.md shapes it: kWh a number, price and amount decimal strings."""
        return {
            "tier": self.tier,
            "kwh": float(self.kwh),
            "price": str(self.price),
            "amount": money_str(self.amount),
        }


@dataclass(frozen=True, slots=True)
class MonthlyCharge:
    """The bill lines of one month and their total."""

    lines: tuple[BillLine, ...]
    amount: Decimal


def _tiers(first: str, second: str, third: str) -> tuple[Tier, ...]:
    return (
        Tier(1, Decimal(2760), Decimal(first)),
        Tier(2, Decimal(4800), Decimal(second)),
        Tier(3, None, Decimal(third)),
    )


#: Price tables by supply voltage (元/kWh). Residential supply below 1 kV (220 V single-phase,
#: 380 V three-phase) shares one table; 10 kV residential supply is 0.02 yuan cheaper.
TARIFFS: dict[str, tuple[Tier, ...]] = {
    "220V": _tiers("0.538", "0.588", "0.838"),
    "380V": _tiers("0.538", "0.588", "0.838"),
    "10kV": _tiers("0.518", "0.568", "0.818"),
}


def tiers_for(voltage: str) -> tuple[Tier, ...]:
    """The tier table of a voltage class; the 220 V table for a class without its own."""
    return TARIFFS.get(voltage, TARIFFS["220V"])


def money(value: Decimal) -> Decimal:
    """Round to the cent, half up (the way a bill rounds, not banker's rounding)."""
    return value.quantize(_CENT, rounding=ROUND_HALF_UP)


def money_str(value: Decimal) -> str:
    """A money amount as api.md's decimal string, always with two decimals ("12.30")."""
    return format(money(value), "f")


def bill_lines(
    usage_kwh: Decimal | int,
    cumulative_before_kwh: Decimal | int,
    tiers: Sequence[Tier] = TARIFFS["220V"],
) -> list[BillLine]:
    """The bill lines of one month's usage, given the year's usage before that month."""
    usage = Decimal(usage_kwh)
    start = Decimal(cumulative_before_kwh)
    if usage < 0 or start < 0:
        raise ValueError("usage and cumulative usage cannot be negative")
    end = start + usage
    lines: list[BillLine] = []
    lower = _ZERO
    for tier in tiers:
        low = max(start, lower)
        high = end if tier.upper_kwh is None else min(end, tier.upper_kwh)
        if high > low:
            kwh = high - low
            lines.append(BillLine(tier.number, kwh, tier.price, money(kwh * tier.price)))
        if tier.upper_kwh is None:
            break
        lower = tier.upper_kwh
    return lines


def monthly_charge(
    usage_kwh: Decimal | int,
    cumulative_before_kwh: Decimal | int,
    tiers: Sequence[Tier] = TARIFFS["220V"],
) -> MonthlyCharge:
    """The lines of one month and the amount due: the sum of the already rounded lines."""
    lines = bill_lines(usage_kwh, cumulative_before_kwh, tiers)
    return MonthlyCharge(tuple(lines), money(sum((line.amount for line in lines), _ZERO)))
