"""Deterministic demo data of the demo business systems: customers (户号), their daily usage and
monthly bills, and planned outages (停电公告).

Everything comes from one ``random.Random(seed)``, so the same seed and reference month give
the same data on every machine: tests, docs and ``demo.json`` can name customers and amounts.
"""

from __future__ import annotations

import calendar
import random
import re
from array import array
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any

from gridgate.demo.tariff import BillLine, money_str, monthly_charge, tiers_for

__all__ = [
    "DEFAULT_CUSTOMER_COUNT",
    "DEFAULT_SEED",
    "FIRST_CUSTOMER_NO",
    "FIRST_CUSTOMER_PHONE",
    "REFERENCE_DATE",
    "REGIONS",
    "Bill",
    "Customer",
    "DemoData",
    "Outage",
    "Region",
    "default_reference_month",
    "generate_demo_data",
    "parse_month",
    "rfc3339",
]

DEFAULT_SEED = 95598
DEFAULT_CUSTOMER_COUNT = 300
#: The day the default data is "as of": bills run up to the last complete month before it.
REFERENCE_DATE = date(2026, 11, 22)
#: The customer every demo walkthrough and ``demo.json`` uses.
FIRST_CUSTOMER_NO = "3300000001"
FIRST_CUSTOMER_PHONE = "13800000001"

_MONTH = re.compile(r"^([0-9]{4})-([0-9]{2})$")
_CHINA = timezone(timedelta(hours=8))


@dataclass(frozen=True, slots=True)
class Region:
    """A power-supply region (供电区域): province → city → district, with its book prefix."""

    province: str
    city: str
    district: str
    code: str
    streets: tuple[str, ...]

    @property
    def levels(self) -> tuple[str, str, str]:
        """The region path from province down to district."""
        return (self.province, self.city, self.district)

    @property
    def path(self) -> str:
        """The region path joined with "/" ("浙江省/杭州市/西湖区")."""
        return "/".join(self.levels)


def _region(city: str, district: str, code: str, streets: str) -> Region:
    return Region("浙江省", city, district, code, tuple(streets.split()))


REGIONS: tuple[Region, ...] = (
    _region("杭州市", "西湖区", "HZXH", "文三路 文二路 天目山路 教工路 学院路 古墩路 留和路"),
    _region("杭州市", "上城区", "HZSC", "解放路 望江路 秋涛路 清泰街 钱江路 凯旋路"),
    _region("杭州市", "拱墅区", "HZGS", "莫干山路 湖墅南路 大关路 祥园路 上塘路 登云路"),
    _region("杭州市", "滨江区", "HZBJ", "江南大道 滨盛路 长河路 江陵路 浦沿路"),
    _region("宁波市", "海曙区", "NBHS", "中山西路 解放南路 望春路 集士港路 环城西路"),
    _region("宁波市", "鄞州区", "NBYZ", "天童南路 四明中路 宁南南路 钱湖北路 首南路"),
    _region("温州市", "鹿城区", "WZLC", "人民路 解放街 车站大道 飞霞南路 学院中路"),
    _region("温州市", "瓯海区", "WZOH", "温州大道 娄桥路 梧慈路 新桥街"),
    _region("绍兴市", "越城区", "SXYC", "解放北路 中兴南路 城南大道 胜利东路"),
)
#: Relative number of customers per region (Hangzhou is the largest city).
_REGION_WEIGHTS = (16, 12, 12, 10, 10, 12, 10, 8, 10)

_SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林高罗郑梁谢宋唐许韩冯邓曹彭曾肖田董潘袁蔡蒋余杜叶程魏苏吕丁"
    "任沈姚卢钱陆金方俞毛应楼"
)
_GIVEN = (
    "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华建国志红文斌浩宇欣怡子轩梓涵俊杰雨婷佳琪晨阳"
)
_PHONE_PREFIXES = (
    *(f"13{d}" for d in range(10)),
    *("150", "151", "152", "153", "155", "156", "157", "158", "159"),
    *(f"18{d}" for d in range(10)),
)
#: Daily kWh range of a customer's base load, by voltage class.
_BASE_LOAD = {"220V": (4.0, 13.0), "380V": (14.0, 40.0), "10kV": (250.0, 900.0)}
#: Heating in winter and air conditioning in summer dominate residential load in Zhejiang.
_SEASON = (1.35, 1.25, 1.0, 0.85, 0.9, 1.1, 1.55, 1.6, 1.2, 0.9, 0.95, 1.25)
_OUTAGE_REASONS = (
    "10kV线路计划检修",
    "配电变压器增容改造",
    "配网自动化改造",
    "线路迁改工程",
    "开关设备更换",
    "树线矛盾清理",
)


@dataclass(slots=True)
class Bill:
    """One month's electricity bill (电费账单); ``paid`` changes when the payment system pays it."""

    customer_no: str
    month: str
    usage_kwh: Decimal
    lines: tuple[BillLine, ...]
    amount: Decimal
    paid: bool

    def to_json(self) -> dict[str, Any]:
        """The bill as api.md shapes it."""
        return {
            "customer_no": self.customer_no,
            "month": self.month,
            "usage_kwh": float(self.usage_kwh),
            "lines": [line.to_json() for line in self.lines],
            "amount": money_str(self.amount),
            "paid": self.paid,
        }


@dataclass(slots=True)
class Customer:
    """A customer (户号) as the marketing system knows it, with its usage and bills."""

    customer_no: str
    name: str
    reserved_phone: str
    voltage: str
    address: str
    supply_region: str
    meter_book: str
    service_password: str = field(repr=False)
    #: Daily usage in tenths of a kWh from ``DemoData.usage_start`` on (compact: 4 bytes a day).
    daily_tenths: array[int] = field(repr=False)
    #: Bills by month "YYYY-MM", oldest first.
    bills: dict[str, Bill] = field(repr=False)

    def profile(self) -> dict[str, Any]:
        """The customer's public fields (never the service password)."""
        return {
            "customer_no": self.customer_no,
            "name": self.name,
            "address": self.address,
            "voltage": self.voltage,
            "supply_region": self.supply_region,
            "meter_book": self.meter_book,
            "reserved_phone": self.reserved_phone,
        }


@dataclass(frozen=True, slots=True)
class Outage:
    """A planned outage notice (计划停电公告) of one region."""

    outage_id: str
    region: str
    start: datetime
    end: datetime
    reason: str
    affected_area: str

    def in_region(self, query: str) -> bool:
        """Whether ``query`` names this outage's region: a path prefix, or a level or its start
        ("西湖" finds 西湖区, "杭州市" every Hangzhou district)."""
        if "/" in query:
            return self.region == query or self.region.startswith(query.rstrip("/") + "/")
        return any(level.startswith(query) for level in self.region.split("/"))

    def to_json(self) -> dict[str, Any]:
        """The notice as the notices system answers it."""
        return {
            "outage_id": self.outage_id,
            "region": self.region,
            "start": rfc3339(self.start),
            "end": rfc3339(self.end),
            "reason": self.reason,
            "affected_area": self.affected_area,
        }


@dataclass(slots=True)
class DemoData:
    """The whole demo data set shared by the demo business systems."""

    seed: int
    reference_month: str
    #: The twelve billed months, oldest first.
    months: tuple[str, ...]
    usage_start: date
    usage_end: date
    regions: tuple[Region, ...]
    customers: dict[str, Customer] = field(repr=False)
    outages: tuple[Outage, ...] = field(repr=False)

    def customer(self, customer_no: str) -> Customer | None:
        """The customer of a 户号, or None."""
        return self.customers.get(customer_no)

    def daily_usage(self, customer: Customer, start: date, end: date) -> list[tuple[date, float]]:
        """(day, kWh) from ``start`` to ``end`` inclusive, clipped to the data range."""
        first = max(start, self.usage_start)
        last = min(end, self.usage_end)
        offset = (first - self.usage_start).days
        return [
            (first + timedelta(days=i), customer.daily_tenths[offset + i] / 10)
            for i in range((last - first).days + 1)
        ]


def rfc3339(moment: datetime) -> str:
    """A time as api.md writes it: RFC 3339 in UTC, to the second ("2026-10-12T00:30:00Z")."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_month(text: str) -> tuple[int, int]:
    """(year, month) of a "YYYY-MM" string; ValueError when it is not one."""
    match = _MONTH.fullmatch(text)
    if not match or not 1 <= int(match.group(2)) <= 12 or int(match.group(1)) < 1:
        raise ValueError(f"not a YYYY-MM month: {text!r}")
    return int(match.group(1)), int(match.group(2))


def default_reference_month(today: date = REFERENCE_DATE) -> str:
    """The last complete month before ``today`` ("2026-10" for the default reference date)."""
    last = today.replace(day=1) - timedelta(days=1)
    return f"{last.year:04d}-{last.month:02d}"


def _month_days(year: int, month: int) -> int:
    return calendar.monthrange(year, month)[1]


def generate_demo_data(
    *,
    seed: int = DEFAULT_SEED,
    customer_count: int = DEFAULT_CUSTOMER_COUNT,
    reference_month: str | None = None,
) -> DemoData:
    """Generate the demo data set: the same arguments always give the same data."""
    if not 1 <= customer_count <= 1_000_000:
        raise ValueError("customer_count must be from 1 to 1 000 000 (10-digit 户号)")
    reference = default_reference_month() if reference_month is None else reference_month
    ref_year, ref_month = parse_month(reference)
    last = ref_year * 12 + ref_month - 1
    billed = [(i // 12, i % 12 + 1) for i in range(last - 11, last + 1)]
    usage_start = date(billed[0][0], billed[0][1], 1)
    usage_end = date(ref_year, ref_month, _month_days(ref_year, ref_month))
    rng = random.Random(seed)  # noqa: S311 - demo data, not security
    # The tiers count from 1 January, so usage is generated from the start of the first
    # billed month's year even though only the billed months' days are kept.
    calc_start = date(usage_start.year, 1, 1)
    factors = _day_factors(calc_start, usage_end)
    kept_from = (usage_start - calc_start).days
    customers: dict[str, Customer] = {}
    books: dict[str, list[int]] = {}
    phones = {FIRST_CUSTOMER_PHONE}
    number = int(FIRST_CUSTOMER_NO)
    for index in range(customer_count):
        first = index == 0
        region = REGIONS[0] if first else rng.choices(REGIONS, _REGION_WEIGHTS)[0]
        voltage = "220V" if first else rng.choices(("220V", "380V", "10kV"), (88, 10, 2))[0]
        customer_no = f"{number:010d}"
        tenths = _daily_tenths(rng, voltage, factors)
        customers[customer_no] = Customer(
            customer_no=customer_no,
            name=rng.choice(_SURNAMES) + "".join(rng.choices(_GIVEN, k=rng.choice((1, 2, 2)))),
            reserved_phone=FIRST_CUSTOMER_PHONE if first else _new_phone(rng, phones),
            voltage=voltage,
            address=_address(rng, region, voltage),
            supply_region=region.path,
            meter_book=_meter_book(rng, region, books),
            service_password=f"{rng.randrange(1_000_000):06d}",
            daily_tenths=array("I", tenths[kept_from:]),
            bills={},
        )
        _bill(rng, customers[customer_no], billed, calc_start, tenths, showcase=first)
        number += rng.randint(1, 97)
    return DemoData(
        seed=seed,
        reference_month=reference,
        months=tuple(f"{y:04d}-{m:02d}" for y, m in billed),
        usage_start=usage_start,
        usage_end=usage_end,
        regions=REGIONS,
        customers=customers,
        outages=_outages(rng, usage_end),
    )


def _day_factors(start: date, end: date) -> list[float]:
    # Computed once and shared by every customer: per-day work is what makes generation slow.
    # The factor includes x10 because usage is kept in tenths of a kWh.
    factors = []
    day = start
    while day <= end:
        weekend = 1.12 if day.weekday() >= 5 else 1.0
        factors.append(_SEASON[day.month - 1] * weekend * 10)
        day += timedelta(days=1)
    return factors


def _daily_tenths(rng: random.Random, voltage: str, factors: list[float]) -> list[int]:
    low, high = _BASE_LOAD[voltage]
    base = rng.uniform(low, high)
    noise = rng.random
    return [round(base * factor * (0.7 + 0.6 * noise())) for factor in factors]


def _bill(
    rng: random.Random,
    customer: Customer,
    billed: list[tuple[int, int]],
    calc_start: date,
    tenths: list[int],
    *,
    showcase: bool,
) -> None:
    tiers = tiers_for(customer.voltage)
    monthly: dict[tuple[int, int], int] = {}
    offset = 0
    year, month = calc_start.year, calc_start.month
    while offset < len(tenths):
        days = _month_days(year, month)
        monthly[year, month] = sum(tenths[offset : offset + days])
        offset += days
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    for position, (year, month) in enumerate(billed):
        before = sum(v for (y, m), v in monthly.items() if y == year and m < month)
        usage = Decimal(monthly[year, month]).scaleb(-1)
        charge = monthly_charge(usage, Decimal(before).scaleb(-1), tiers)
        latest = position == len(billed) - 1
        # The latest bill is often still open; an older open bill is rare (arrears). The
        # walkthrough customer owes exactly its latest bill, so a payment demo always works.
        paid = rng.random() < (0.4 if latest else 0.99)
        if showcase:
            paid = not latest
        key = f"{year:04d}-{month:02d}"
        customer.bills[key] = Bill(
            customer.customer_no, key, usage, charge.lines, charge.amount, paid
        )


def _new_phone(rng: random.Random, taken: set[str]) -> str:
    while True:
        phone = rng.choice(_PHONE_PREFIXES) + f"{rng.randrange(100_000_000):08d}"
        if phone not in taken:
            taken.add(phone)
            return phone


def _address(rng: random.Random, region: Region, voltage: str) -> str:
    street = f"{region.city}{region.district}{rng.choice(region.streets)}{rng.randint(1, 399)}号"
    if voltage == "10kV":
        return street
    if voltage == "380V":
        return f"{street}{rng.randint(1, 3)}层商铺"
    floor = rng.randint(1, 18)
    return f"{street}{rng.randint(1, 12)}幢{floor}{rng.randint(1, 4):02d}室"


def _meter_book(rng: random.Random, region: Region, books: dict[str, list[int]]) -> str:
    # [book number, places left]: a meter reader's book holds a handful of neighbouring meters.
    book = books.setdefault(region.code, [rng.randint(1, 40), rng.randint(4, 12)])
    if book[1] == 0:
        book[0] += rng.randint(1, 3)
        book[1] = rng.randint(4, 12)
    book[1] -= 1
    return f"{region.code}-{book[0]:04d}"


def _outages(rng: random.Random, usage_end: date) -> tuple[Outage, ...]:
    # Around the end of the data: some notices already past, most still ahead.
    first_day = usage_end - timedelta(days=10)
    outages = []
    for region in REGIONS:
        for _ in range(rng.randint(1, 3)):
            day = first_day + timedelta(days=rng.randint(0, 50))
            start = datetime.combine(day, time(rng.choice((7, 8, 9)), rng.choice((0, 30))), _CHINA)
            end = start + timedelta(hours=rng.randint(2, 8))
            street = rng.choice(region.streets)
            low = rng.randint(1, 200)
            high = low + rng.randint(20, 180)
            area = f"{region.district}{street}沿线（{low}号至{high}号）及周边小区"
            outages.append((start, region, end, rng.choice(_OUTAGE_REASONS), area))
    outages.sort(key=lambda item: (item[0], item[1].code))
    return tuple(
        Outage(
            outage_id=f"TD{start:%Y%m%d}{seq:03d}",
            region=region.path,
            start=start.astimezone(UTC),
            end=end.astimezone(UTC),
            reason=reason,
            affected_area=area,
        )
        for seq, (start, region, end, reason, area) in enumerate(outages, start=1)
    )
