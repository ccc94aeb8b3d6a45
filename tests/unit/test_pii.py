"""Personal data: ID-number validation (GB 11643) and masks that never show more than they keep."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gridgate.pii import (
    MASKS,
    id_check_char,
    mask,
    mask_address,
    mask_bank_card,
    mask_customer_no,
    mask_email,
    mask_id_number,
    mask_name,
    mask_phone,
    validate_id_number,
)

KNOWN_VALID = "11010519491231002X"  # the example of GB 11643-1999 itself


def _id(region: str = "330102", born: str = "19900101", sequence: str = "123") -> str:
    first17 = region + born + sequence
    return first17 + id_check_char(first17)


# --- ID numbers -------------------------------------------------------------------------------


def test_check_char_of_the_standards_example() -> None:
    assert id_check_char(KNOWN_VALID[:17]) == "X"
    assert validate_id_number(KNOWN_VALID) == KNOWN_VALID


def test_generated_numbers_are_valid() -> None:
    for born in ("19000101", "19900101", "20000229", "20231231"):
        number = _id(born=born)
        assert validate_id_number(number) == number


def test_lower_case_x_and_surrounding_spaces_are_normalised() -> None:
    assert validate_id_number(" 11010519491231002x\n") == KNOWN_VALID


@pytest.mark.parametrize(
    ("number", "reason"),
    [
        (KNOWN_VALID[:17], "18 characters"),
        (KNOWN_VALID + "1", "18 characters"),
        ("", "18 characters"),
        ("1101051949123100X2", "17 digits followed by a digit or X"),
        ("11010519491231002Y", "17 digits followed by a digit or X"),
        ("１１０１０５１９４９１２３１００２Ｘ", "17 digits followed by a digit or X"),
        (_id(born="19900230"), "not a valid date"),
        (_id(born="19901301"), "not a valid date"),
        (_id(born="18991231"), "before 1900"),
        (_id(born="29990101"), "in the future"),
        ("110105194912310021", "check character"),
    ],
)
def test_invalid_numbers_are_refused_with_a_reason(number: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason) as caught:
        validate_id_number(number)
    if len(number) > 4:
        assert number not in str(caught.value)  # messages reach logs: never echo the number


def test_birth_date_today_is_accepted_tomorrow_is_not() -> None:
    today = date(2024, 6, 1)
    assert validate_id_number(_id(born="20240601"), today=today)
    with pytest.raises(ValueError, match="future"):
        validate_id_number(_id(born="20240602"), today=today)


@pytest.mark.parametrize("first17", ["1101051949123100", "110105194912310021", "1101051949123100A"])
def test_check_char_needs_17_digits(first17: str) -> None:
    with pytest.raises(ValueError, match="17 digits"):
        id_check_char(first17)


@given(
    region=st.from_regex(r"[1-8][0-9]{5}", fullmatch=True),
    born=st.dates(min_value=date(1900, 1, 1), max_value=date(2020, 12, 31)),
    sequence=st.from_regex(r"[0-9]{3}", fullmatch=True),
)
def test_exactly_one_check_character_fits(region: str, born: date, sequence: str) -> None:
    first17 = region + f"{born:%Y%m%d}" + sequence
    right = id_check_char(first17)
    assert validate_id_number(first17 + right) == first17 + right
    for wrong in set("0123456789X") - {right}:
        with pytest.raises(ValueError, match="check character"):
            validate_id_number(first17 + wrong)


# --- masks by example -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("masker", "value", "masked"),
    [
        (mask_phone, "13812345678", "138****5678"),
        (mask_phone, "138 1234-5678", "138****5678"),
        (mask_phone, "+8613812345678", "+86*******5678"),
        (mask_phone, "87654321", "87****21"),
        (mask_phone, "123", "***"),
        (mask_id_number, "330102199001011234", "330***********1234"),
        (mask_id_number, KNOWN_VALID, "110***********002X"),
        (mask_id_number, "330102900101123", "330*********123"),
        (mask_customer_no, "3300000001", "330****001"),
        (mask_customer_no, "3300000000001", "330*******001"),
        (mask_customer_no, "12345678", "12****78"),
        (mask_bank_card, "6222021234567890", "************7890"),
        (mask_bank_card, "6222 0212 3456 7890 123", "***************0123"),
        (mask_bank_card, "12345678", "******78"),
        (mask_name, "张三", "张*"),
        (mask_name, "欧阳娜娜", "欧***"),
        (mask_name, "Zhang San", "Z********"),
        (mask_name, "张", "*"),
        (mask_email, "zhangsan@example.com", "z***@example.com"),
        (mask_email, "z@example.com", "***@example.com"),
        (mask_email, "not-an-address", "n***"),
        (mask_address, "浙江省杭州市西湖区文三路90号", "浙江省杭州市西湖区****"),
        (mask_address, "北京市海淀区中关村大街1号", "北京市海淀区****"),
        (mask_address, "上海市浦东新区世纪大道1号", "上海市浦东新区****"),
        (
            mask_address,
            "新疆维吾尔自治区乌鲁木齐市天山区解放路",
            "新疆维吾尔自治区乌鲁木齐市天山区****",
        ),
        (mask_address, "河北省正定县城关镇", "河北省正定县****"),
        (mask_address, "浙江省杭州市建德市新安江街道", "浙江省杭州市建德市****"),
        (mask_address, "浙江省杭州市文一路100号", "浙江省杭州市****"),
        (mask_address, "文三路90号3幢", "文三路****"),
        (mask_address, "12 Main Street", "****"),
    ],
)
def test_masks(masker: Callable[[str], str], value: str, masked: str) -> None:
    assert masker(value) == masked


@pytest.mark.parametrize("kind", sorted(MASKS))
def test_every_kind_accepts_odd_values(kind: str) -> None:
    for value in ("", " ", "*", "***", "\x00", "😀", "a" * 10_000, "张@@@区县市"):
        assert len(mask(kind, value)) <= len(value) + 4
    assert mask(kind, "") == ""


def test_mask_dispatch() -> None:
    assert set(MASKS) == {
        "name",
        "phone",
        "id_number",
        "address",
        "customer_no",
        "bank_card",
        "email",
    }
    assert mask("phone", "13812345678") == "138****5678"
    assert mask("phone", 13812345678) == "138****5678"
    assert mask("customer_no", 3300000001) == "330****001"
    assert mask("name", None) is None
    with pytest.raises(ValueError, match="unknown mask kind"):
        mask("password", "x")


# --- masks by property ------------------------------------------------------------------------


def _digits(size: int) -> st.SearchStrategy[str]:
    return st.text(alphabet="0123456789", min_size=size, max_size=size)


@given(_digits(11))
def test_phone_numbers_show_only_the_first_3_and_last_4(number: str) -> None:
    assert mask_phone(number) == number[:3] + "****" + number[7:]


@given(_digits(17))
def test_id_numbers_show_only_the_first_3_and_last_4(first17: str) -> None:
    number = first17 + id_check_char(first17)
    assert mask_id_number(number) == number[:3] + "*" * 11 + number[14:]


@given(_digits(10))
def test_customer_numbers_show_only_the_first_3_and_last_3(number: str) -> None:
    assert mask_customer_no(number) == number[:3] + "****" + number[7:]


@given(st.integers(min_value=12, max_value=19).flatmap(_digits))
def test_card_numbers_show_only_the_last_4(number: str) -> None:
    assert mask_bank_card(number) == "*" * (len(number) - 4) + number[-4:]


# The documented kept characters (head, tail) and the length from which they apply in full.
_ENDS = {
    "phone": (3, 4, 11),
    "id_number": (3, 4, 18),
    "customer_no": (3, 3, 10),
    "bank_card": (0, 4, 12),
}


@given(kind=st.sampled_from(sorted(_ENDS)), value=st.text())
def test_numbers_keep_at_most_their_documented_ends(kind: str, value: str) -> None:
    compact = re.sub(r"[\s\-]+", "", value)
    size = len(compact)
    head, tail, full = _ENDS[kind]
    if size < full:
        head, tail = min(head, size // 4), min(tail, size // 4)
    masked = mask(kind, value)
    assert any(
        masked == compact[:h] + "*" * (size - h - t) + compact[size - t :]
        for h in range(head + 1)
        for t in range(tail + 1)
    ), masked


@given(st.text())
def test_names_keep_at_most_the_first_character(value: str) -> None:
    name = value.strip()
    masked = mask_name(value)
    assert len(masked) == len(name)
    assert set(masked[1:]) <= {"*"}
    assert masked[:1] in {name[:1], "*"}


@given(st.text())
def test_emails_keep_at_most_one_character_and_the_domain(value: str) -> None:
    address = value.strip()
    local, at, domain = address.rpartition("@")
    if not at:
        local, domain = address, ""
    masked = mask_email(value)
    if not address:
        assert masked == ""
        return
    assert masked in {local[:1] + "***" + at + domain, "***" + at + domain}


_CJK_ONLY = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]*")


@given(
    st.text(
        alphabet=st.sampled_from("浙江省杭州市西湖区县旗自治州盟地区路号幢*0123 a"), max_size=40
    )
)
def test_addresses_keep_only_a_short_ideographic_prefix(value: str) -> None:
    address = value.strip()
    masked = mask_address(value)
    if not address:
        assert masked == ""
        return
    assert masked.endswith("****")
    prefix = masked[:-4]
    assert address.startswith(prefix)
    assert _CJK_ONLY.fullmatch(prefix)  # never a house number or Latin text
    assert len(prefix) <= 30


def _runs(text: str) -> list[str]:
    return [run for run in text.split("*") if run]


@given(kind=st.sampled_from(sorted(MASKS)), value=st.text())
def test_masking_twice_reveals_nothing_new(kind: str, value: str) -> None:
    once = mask(kind, value)
    twice = mask(kind, once)
    assert len(once) <= len(value) + 4
    assert all(run in once for run in _runs(twice))
    if kind != "address":  # an address may lose more on a second pass, never gain
        assert twice == once
