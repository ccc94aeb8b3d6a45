"""Profile rules: e-mail addresses, user names, attribute merge patches, user-name races."""

from __future__ import annotations

import secrets
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from gridgate.accounts.parts import AccountsParts
from gridgate.accounts.profile import ProfileService, email_hash, merge_attributes
from gridgate.accounts.schemas import ProfileUpdate, Username, normalize_email
from gridgate.errors import Conflict, InvalidRequest
from gridgate.runtime import Runtime
from gridgate.storage.crypto import SecretBox

PHONES = ("13900000001", "13900000002")
PASSWORD = "a-good-password-1"


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("a@example.com", "a@example.com"),
        ("Zhang.San+bills@Example.COM", "Zhang.San+bills@example.com"),
        ("o'neil@mail.xn--fiqs8s", "o'neil@mail.xn--fiqs8s"),
        ("x_y-z@a-b.c-d.example", "x_y-z@a-b.c-d.example"),
    ],
)
def test_email_addresses_keep_the_local_part_and_lower_the_domain(given: str, stored: str) -> None:
    assert normalize_email(given) == stored


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "@example.com",
        "a@",
        "a@example",
        "a@.example.com",
        "a.@example.com",
        ".a@example.com",
        "a@exa_mple.com",
        "a@example.123",
        "a b@example.com",
        '"quoted"@example.com',
        "a@[127.0.0.1]",
        "a@例子.中国",
        "a\n@example.com",
        "a" * 65 + "@example.com",
        "a@" + ".".join(["b" * 63] * 4) + ".com",
    ],
)
def test_malformed_email_addresses_are_refused_without_echo(bad: str) -> None:
    with pytest.raises(ValueError) as caught:
        normalize_email(bad)
    # The message explains the rule; it never repeats the address (personal data).
    assert not bad or bad not in str(caught.value)


def test_the_email_look_up_hash_ignores_case() -> None:
    box = SecretBox([secrets.token_bytes(32)])
    assert email_hash(box, "Zhang@Example.com") == email_hash(box, "zhang@example.com")
    assert email_hash(box, "zhang@example.com") != email_hash(box, "wang@example.com")


@pytest.mark.parametrize(("given", "kept"), [("ZhangSan", "zhangsan"), ("a.b-c_9", "a.b-c_9")])
def test_user_names_are_kept_in_lower_case(given: str, kept: str) -> None:
    assert TypeAdapter(Username).validate_python(given) == kept


@pytest.mark.parametrize("bad", ["ab", "_abc", "9abc", "abc!", "ａｂｃ", "ROOT", "Support"])
def test_malformed_or_reserved_user_names_are_refused(bad: str) -> None:
    with pytest.raises(ValidationError):
        TypeAdapter(Username).validate_python(bad)


def test_merge_sets_replaces_and_removes() -> None:
    current = {"a": 1, "b": "x", "c": True}
    merged = merge_attributes(current, {"a": None, "b": "y", "d": 2.5, "missing": None})
    assert merged == {"b": "y", "c": True, "d": 2.5}
    assert current == {"a": 1, "b": "x", "c": True}  # the stored value is not changed in place


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"A": 1}, "attributes.A"),
        ({"a-b": 1}, "attributes.a-b"),
        ({"": 1}, "attributes."),
        ({"x": {"y": 1}}, "attributes.x"),
        ({"x": [1]}, "attributes.x"),
        ({"x": "é" * 257}, "attributes.x"),
        ({"x": -(2**53)}, "attributes.x"),
        ({"x": float("inf")}, "attributes.x"),
        ({"x": float("nan")}, "attributes.x"),
    ],
)
def test_merge_refuses_bad_names_and_values(patch: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        merge_attributes({}, patch)
    assert caught.value.extra["field"] == field


def test_merge_counts_the_attributes_after_the_merge() -> None:
    full = {f"k{i}": i for i in range(32)}
    assert len(merge_attributes(full, {"k0": None, "new": 1})) == 32
    with pytest.raises(InvalidRequest) as caught:
        merge_attributes(full, {"new": 1})
    assert caught.value.extra["field"] == "attributes"


class _Racing(ProfileService):
    """A profile service that does not see the other account's user name: as when both
    accounts check before either has written."""

    async def _taken(self, username: str, account_id: str) -> bool:
        return False


async def test_a_user_name_taken_by_a_concurrent_change_is_a_conflict(runtime: Runtime) -> None:
    parts = AccountsParts.build(runtime)
    async with runtime.db.sessions() as session:
        accounts = parts.accounts(session)
        first = await accounts.register(PHONES[0], PASSWORD, channel="app", channel_user_id=None)
        second = await accounts.register(PHONES[1], PASSWORD, channel="app", channel_user_id=None)
        first.username = "taken"
        await session.flush()
        change = ProfileUpdate.model_validate({"username": "Taken"})
        # The database's unique constraint answers, as the service's own check did not.
        with pytest.raises(Conflict) as caught:
            await _Racing(session, runtime.box).update(second, change)
        assert caught.value.extra["field"] == "username"
        await session.rollback()
    await parts.store.close()
