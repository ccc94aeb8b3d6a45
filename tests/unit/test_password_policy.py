"""The password policy: length, the shipped list of common passwords, the user's name."""

from __future__ import annotations

import secrets

import pytest

from gridgate.errors import WeakPassword
from gridgate.password_policy import OPERATOR_PASSWORDS, PasswordPolicy, common_passwords


def test_the_shipped_list_is_there_and_folded() -> None:
    listed = common_passwords()
    assert len(listed) > 15_000
    assert {"password", "iloveyou", "qwertyuiop", "1q2w3e4r5t6y"} <= listed
    assert all(len(entry) >= 8 and entry == entry.casefold() for entry in listed)


@pytest.mark.parametrize(
    ("password", "username", "reason"),
    [
        ("elevenchars", None, "12 to 128 characters"),
        ("x" * 129, None, "12 to 128 characters"),
        ("Password12345678", None, "common or breached"),
        ("QWERTYUIOP!!2026", None, "common or breached"),
        ("ｐａｓｓｗｏｒｄ1234", None, "common or breached"),  # full-width letters
        ("abababababababab", None, "too few different characters"),
        ("Alice-in-the-grid-1", "alice", "user name"),
        ("my-GridGate-login", None, "name of the service"),
    ],
)
def test_refusals_say_why_without_quoting(password: str, username: str | None, reason: str) -> None:
    with pytest.raises(WeakPassword) as refused:
        OPERATOR_PASSWORDS.check(password, username=username)
    assert reason in refused.value.detail
    assert password not in refused.value.detail
    assert (refused.value.code, refused.value.status) == ("auth.weak_password", 422)
    assert refused.value.extra["field"] == "password"


@pytest.mark.parametrize(
    "password",
    [
        "correct-horse-battery",
        "a-long-enough-password",
        "长江黄河都是好名字对不对",
        "   spaces   ok  ",
    ],
)
def test_long_uncommon_passwords_pass(password: str) -> None:
    assert OPERATOR_PASSWORDS.problem(password, username="alice") is None


def test_the_demo_operators_generated_password_passes() -> None:
    # demo/seed.py makes the admin operator's password with token_urlsafe(15).
    for _ in range(200):
        assert OPERATOR_PASSWORDS.problem(secrets.token_urlsafe(15), username="admin") is None


def test_another_list_can_be_given() -> None:
    policy = PasswordPolicy(min_length=8, common=lambda: {"utility-2026"})
    assert policy.problem("Utility-2026", username=None) is not None
    assert policy.problem("password", username=None) is None  # not on that list
