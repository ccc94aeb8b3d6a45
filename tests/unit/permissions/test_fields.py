"""Field rules: what each level sees of a JSON response, for fixed and generated documents."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gridgate.errors import UpstreamBadResponse
from gridgate.permissions.fields import (
    EACH,
    FieldRule,
    compile_rules,
    filter_body,
    parse_action,
    parse_path,
)
from gridgate.pii import MASKS, mask

PHONE = "13812345678"
ID_NUMBER = "11010519491231002X"
ADDRESS = "浙江省杭州市西湖区文三路 90 号"


def _filtered(rules: list[FieldRule], document: Any, level: int) -> Any:
    return compile_rules(rules).apply(document, level)


# --- paths and actions ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "steps"),
    [
        ("name", ("name",)),
        ("customer.address", ("customer", "address")),
        ("items[].address", ("items", EACH, "address")),
        ("items[].lines[].amount", ("items", EACH, "lines", EACH, "amount")),
        ("[].phone", (EACH, "phone")),
        ("grid[][].x", ("grid", EACH, EACH, "x")),
        ("_a-b.C9", ("_a-b", "C9")),
    ],
)
def test_paths_parse_into_steps(path: str, steps: tuple[str, ...]) -> None:
    assert parse_path(path) == steps


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("", "at least one field"),
        ("a..b", "'' is not a field"),
        (".a", "'' is not a field"),
        ("a.", "'' is not a field"),
        ("9a", "starts with a letter"),
        ("a b", "starts with a letter"),
        ("a[0].b", "starts with a letter"),
        ("a[]b", "starts with a letter"),
        ("a.[].b", "[] follows a field name"),
        ("items[]", "ends with a field name"),
        ("[]", "ends with a field name"),
    ],
)
def test_bad_paths_say_why(path: str, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)):
        parse_path(path)


def test_actions_parse_into_a_kind_or_none_for_drop() -> None:
    assert parse_action("drop") is None
    assert [parse_action(f"mask:{kind}") for kind in MASKS] == list(MASKS)


@pytest.mark.parametrize(
    ("action", "reason"),
    [("mask:ssn", "unknown mask kind 'ssn'"), ("Drop", "unknown action"), ("mask", "unknown")],
)
def test_bad_actions_say_why(action: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_action(action)


@pytest.mark.parametrize("below_level", [0, 4, -1])
def test_compile_refuses_levels_out_of_range_naming_the_path(below_level: int) -> None:
    with pytest.raises(ValueError, match=r"field rule 'name': below_level"):
        compile_rules([FieldRule("name", "drop", below_level)])


def test_compile_names_the_path_of_a_bad_action() -> None:
    with pytest.raises(
        ValueError, match=re.escape("field rule 'customer.phone': unknown mask kind")
    ):
        compile_rules([FieldRule("customer.phone", "mask:tel", 2)])


# --- apply --------------------------------------------------------------------------------------


def test_drop_removes_the_field() -> None:
    assert _filtered([FieldRule("phone", "drop", 3)], {"phone": PHONE, "a": 1}, 0) == {"a": 1}


@pytest.mark.parametrize("kind", list(MASKS))
def test_mask_of_each_kind_follows_pii(kind: str) -> None:
    value = {"phone": PHONE, "id_number": ID_NUMBER, "address": ADDRESS}.get(kind, "张三丰abc@x.cn")
    out = _filtered([FieldRule("v", f"mask:{kind}", 3)], {"v": value}, 1)
    assert out == {"v": mask(kind, value)}
    assert out["v"] != value


def test_numbers_become_masked_strings_and_null_and_booleans_stay() -> None:
    rules = [FieldRule(key, "mask:phone", 3) for key in ("n", "f", "z", "t")]
    out = _filtered(rules, {"n": 13812345678, "f": 1.5, "z": None, "t": True}, 0)
    assert out == {"n": "138****5678", "f": mask("phone", "1.5"), "z": None, "t": True}


def test_nested_objects() -> None:
    document = {"customer": {"address": ADDRESS, "name": "张三"}, "address": "kept"}
    out = _filtered([FieldRule("customer.address", "mask:address", 2)], document, 0)
    assert out == {
        "customer": {"address": "浙江省杭州市西湖区****", "name": "张三"},
        "address": "kept",
    }


def test_every_element_of_an_array() -> None:
    document = {"items": [{"x": "张三", "y": 1}, {"y": 2}, "odd", {"x": "李四"}]}
    out = _filtered([FieldRule("items[].x", "mask:name", 2)], document, 1)
    assert out == {"items": [{"x": "张*", "y": 1}, {"y": 2}, "odd", {"x": "李*"}]}


def test_arrays_of_arrays() -> None:
    document = {
        "grid": [[{"x": 1, "k": 2}], [], [{"k": 3}, {"x": 4}]],
        "rows": [{"cells": [{"x": 5}]}],
    }
    rules = [FieldRule("grid[][].x", "drop", 1), FieldRule("rows[].cells[].x", "drop", 1)]
    out = _filtered(rules, document, 0)
    assert out == {"grid": [[{"k": 2}], [], [{"k": 3}, {}]], "rows": [{"cells": [{}]}]}


def test_top_level_array() -> None:
    out = _filtered([FieldRule("[].phone", "mask:phone", 1)], [{"phone": PHONE}, {"a": PHONE}], 0)
    assert out == [{"phone": "138****5678"}, {"a": PHONE}]


def test_missing_paths_and_odd_shapes_are_ignored() -> None:
    rules = [
        FieldRule("customer.address", "drop", 3),
        FieldRule("items[].x", "drop", 3),
        FieldRule("[].x", "drop", 3),
        FieldRule("list.x", "drop", 3),
    ]
    odd: list[Any] = [
        {},
        {"customer": "a string", "items": {"x": 1}, "list": [{"x": 1}]},
        {"customer": None, "items": [1, None, [{"x": 1}]]},
        "scalar",
        12,
        None,
        [],
    ]
    for document in odd:
        assert _filtered(rules, copy.deepcopy(document), 0) == document


def test_masked_object_has_every_leaf_masked_and_drops_inside_still_apply() -> None:
    document = {"c": {"name": "张三", "phone": PHONE, "tags": ["王五", 7, None], "card": "x"}}
    rules = [
        FieldRule("c", "mask:name", 3),
        FieldRule("c.phone", "mask:phone", 3),  # the more specific rule wins for the phone
        FieldRule("c.card", "drop", 3),
    ]
    out = _filtered(rules, document, 0)
    assert out == {"c": {"name": "张*", "phone": "138****5678", "tags": ["王*", "*", None]}}


def test_level_boundaries() -> None:
    flt = compile_rules([FieldRule("phone", "drop", 2)])
    assert [flt.applies(level) for level in (0, 1, 2)] == [True, True, False]
    assert [flt.apply({"phone": PHONE}, level) for level in (0, 1, 2)] == [{}, {}, {"phone": PHONE}]


def test_unknown_levels_are_refused_rather_than_served_unfiltered() -> None:
    with pytest.raises(ValueError, match="unknown level"):
        compile_rules([]).apply({}, -1)


def test_drop_beats_mask_whatever_the_order() -> None:
    for rules in (
        [FieldRule("phone", "mask:phone", 3), FieldRule("phone", "drop", 2)],
        [FieldRule("phone", "drop", 2), FieldRule("phone", "mask:phone", 3)],
    ):
        flt = compile_rules(rules)
        assert flt.apply({"phone": PHONE}, 1) == {}
        assert flt.apply({"phone": PHONE}, 2) == {"phone": "138****5678"}


def test_first_declared_mask_is_kept() -> None:
    rules = [FieldRule("v", "mask:name", 3), FieldRule("v", "mask:phone", 3)]
    assert _filtered(rules, {"v": PHONE}, 0) == {"v": "1**********"}


# --- bodies -------------------------------------------------------------------------------------

_PHONE_DROPPED = compile_rules([FieldRule("phone", "drop", 3)])


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "Application/JSON; charset=utf-8", "application/problem+json", "x/y+json"],
)
def test_json_bodies_are_filtered(content_type: str) -> None:
    body = orjson.dumps({"phone": PHONE, "a": "b"})
    assert orjson.loads(filter_body(body, content_type, _PHONE_DROPPED, 0)) == {"a": "b"}


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/jsonl", "text/json"])
def test_other_bodies_pass_untouched(content_type: str | None) -> None:
    body = b'{"phone": "13812345678"} not even json'
    assert filter_body(body, content_type, _PHONE_DROPPED, 0) is body


def test_empty_json_body_and_levels_without_rules_pass_untouched() -> None:
    assert filter_body(b"", "application/json", _PHONE_DROPPED, 0) == b""
    no_rules_for_2 = compile_rules([FieldRule("phone", "drop", 2)])
    assert filter_body(b"{bad", "application/json", no_rules_for_2, 2) == b"{bad"


@pytest.mark.parametrize("body", [b"{bad", b'{"phone": "1381234', b"\xff\xfe{}", b"  "])
def test_json_that_does_not_parse_is_a_bad_upstream_answer(body: bytes) -> None:
    with pytest.raises(UpstreamBadResponse) as caught:
        filter_body(body, "application/json", _PHONE_DROPPED, 0)
    assert caught.value.code == "upstream.bad_response"
    assert caught.value.status == 502


# --- generated documents and rules --------------------------------------------------------------

_NAMES = ("a", "b", "phone", "items")
# The keep rules of gridgate.pii: head, tail, and the length below which at most a quarter
# of the value is kept at each end.
_END_KEEPING = {
    "phone": (3, 4, 11),
    "id_number": (3, 4, 18),
    "customer_no": (3, 3, 10),
    "bank_card": (0, 4, 12),
}
# No "*" in generated text: a value made of stars would equal its own mask.
_text = st.text(alphabet="0123456789abcXYZ张三浙江省杭州市区 -@.", max_size=20)
_documents = st.recursive(
    _text | st.integers(min_value=-(10**12), max_value=10**12),
    lambda inner: (
        st.dictionaries(st.sampled_from(_NAMES), inner, max_size=4) | st.lists(inner, max_size=3)
    ),
    max_leaves=25,
)
_steps = st.lists(st.sampled_from((*_NAMES, EACH)), max_size=3).flatmap(
    lambda head: st.sampled_from(_NAMES).map(lambda last: (*head, last))
)
_Rule = tuple[tuple[str, ...], str, int]  # steps, action, below_level
_actions = st.sampled_from(("drop", *(f"mask:{kind}" for kind in MASKS)))


def _rules_for(document: Any) -> st.SearchStrategy[list[_Rule]]:
    """Rules on paths the document has, often a field and one inside it, and arbitrary ones."""
    patterns = list(
        dict.fromkeys(
            pattern[:end]
            for concrete, _ in _leaves(document)
            for pattern in [_pattern(concrete)]
            for end in range(1, len(pattern) + 1)
            if pattern[end - 1] != EACH
        )
    )

    def rule(steps: tuple[str, ...]) -> st.SearchStrategy[_Rule]:
        return st.tuples(st.just(steps), _actions, st.integers(1, 3))

    groups: st.SearchStrategy[tuple[_Rule, ...]] = _steps.flatmap(lambda s: st.tuples(rule(s)))
    if patterns:
        # A rule and another on the same field or one inside it: where rules meet.
        nested = st.sampled_from(patterns).flatmap(
            lambda outer: st.sampled_from([p for p in patterns if p[: len(outer)] == outer]).map(
                lambda inner: (outer, inner)
            )
        )
        pairs = nested.flatmap(lambda pair: st.tuples(rule(pair[0]), rule(pair[1])))
        groups = pairs | st.sampled_from(patterns).flatmap(lambda s: st.tuples(rule(s))) | groups
    return st.lists(groups, max_size=4).map(lambda drawn: [r for group in drawn for r in group])


def _pattern(concrete: tuple[Any, ...]) -> tuple[str, ...]:
    return tuple(EACH if isinstance(step, int) else step for step in concrete)


def _render(steps: tuple[str, ...]) -> str:
    path = ""
    for step in steps:
        path += step if step == EACH else ("." if path else "") + step
    return path


def _leaves(value: Any, concrete: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    """Every scalar with its concrete path (keys and list indices)."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, (*concrete, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _leaves(item, (*concrete, index))
    else:
        yield concrete, value


def _lookup(value: Any, concrete: tuple[Any, ...]) -> tuple[bool, Any]:
    for step in concrete:
        in_object = isinstance(step, str) and isinstance(value, dict) and step in value
        if not (in_object or (isinstance(step, int) and isinstance(value, list))):
            return False, None
        value = value[step]
    return True, value


def _expected(rules: list[_Rule], level: int, concrete: tuple[Any, ...]) -> str | None:
    """What the rules do to the leaf at ``concrete`` (drop, mask:<kind>, None), as documented."""
    pattern = _pattern(concrete)
    hits = [(len(s), a) for s, a, below in rules if level < below and pattern[: len(s)] == s]
    if any(action == "drop" for _, action in hits):
        return "drop"
    # The most specific (longest) path wins; among equal paths, the first declared.
    return max(hits, key=lambda hit: hit[0], default=(0, None))[1]


def _visible(value: str) -> str:
    return value.replace("*", "")


def _is_subsequence(small: str, big: str) -> bool:
    chars = iter(big)
    return all(char in chars for char in small)


@settings(max_examples=500, deadline=None)
@given(document=_documents, data=st.data())
def test_generated_documents_reveal_only_what_the_rules_allow(
    document: Any, data: st.DataObject
) -> None:
    rules = data.draw(_rules_for(document), label="rules")
    flt = compile_rules(FieldRule(_render(s), a, below) for s, a, below in rules)
    for level in (0, 1, 2):
        out = flt.apply(copy.deepcopy(document), level)
        for concrete, original in _leaves(document):
            found, value = _lookup(out, concrete)
            action = _expected(rules, level, concrete)
            if action == "drop":  # (1) a dropped field never reaches the caller
                assert not found, (concrete, out)
            elif action is not None:  # (2) masked exactly as pii does, keeping only its ends
                kind = action.removeprefix("mask:")
                assert value == mask(kind, original)
                shown = str(original)
                # Address and e-mail masks keep a prefix or a domain whole, by design.
                if len(shown) >= 8 and kind not in {"address", "email"}:
                    assert shown not in value
                if kind in _END_KEEPING:
                    head, tail, full = _END_KEEPING[kind]
                    if len(value) < full:
                        head, tail = min(head, len(value) // 4), min(tail, len(value) // 4)
                    assert set(value[head : len(value) - tail]) <= {"*"}
            else:  # (3) untouched by any rule for this level
                assert found and value == original, (concrete, out)
        # (4) filtering again brings nothing back and shows no character it hid
        again = flt.apply(copy.deepcopy(out), level)
        for concrete, value in _leaves(again):
            found, before = _lookup(out, concrete)
            assert found
            if isinstance(value, str) and value != before:
                assert _is_subsequence(_visible(value), _visible(before))
