"""What a new password must be (ASVS V2.1): long enough, not common or breached, not the name.

The list of common and breached passwords ships with gridgate (``data/common-passwords.txt.gz``,
sources and licences beside it): a closed network has no breach API to ask, and a password
must never leave the process to be checked. Only length is a rule about the characters
themselves: no composition rules (ASVS 2.1.9), any printable character, spaces included.
"""

from __future__ import annotations

import functools
import gzip
import string
import unicodedata
from collections.abc import Callable, Container, Iterable
from importlib import resources

from gridgate.errors import WeakPassword

__all__ = ["OPERATOR_PASSWORDS", "PasswordPolicy", "common_passwords"]

#: Characters a guessable password is often padded with (``password2026!``).
_PADDING = string.digits + string.punctuation + string.whitespace
#: Fewer different characters than this is a repetition (``abababababab``), not a password.
_MIN_DISTINCT = 5


@functools.cache
def common_passwords() -> frozenset[str]:
    """The shipped list of common and breached passwords, lower-cased (read once)."""
    raw = resources.files("gridgate").joinpath("data", "common-passwords.txt.gz").read_bytes()
    return frozenset(line for line in gzip.decompress(raw).decode("utf-8").split("\n") if line)


def _folded(text: str) -> str:
    # Compatibility forms and case do not make a listed password another one.
    return unicodedata.normalize("NFKC", text).casefold()


class PasswordPolicy:
    """Checks a password someone chooses; :meth:`check` raises :class:`WeakPassword`."""

    def __init__(
        self,
        *,
        min_length: int,
        max_length: int = 128,
        context_words: Iterable[str] = ("gridgate",),
        common: Callable[[], Container[str]] = common_passwords,
    ) -> None:
        self.min_length = min_length
        self.max_length = max_length
        self.context_words = tuple(_folded(word) for word in context_words)
        self._common = common

    def problem(self, password: str, *, username: str | None = None) -> str | None:
        """Why ``password`` is refused (never quoting it), or None when it is acceptable."""
        if not self.min_length <= len(password) <= self.max_length:
            return f"password: must be {self.min_length} to {self.max_length} characters long"
        folded = _folded(password)
        common = self._common()
        refusals = (
            (
                bool(username) and _folded(username or "") in folded,
                "must not contain the user name",
            ),
            (
                any(word in folded for word in self.context_words),
                "must not contain the name of the service",
            ),
            (len(set(folded)) < _MIN_DISTINCT, "repeats too few different characters"),
            (
                folded in common or folded.strip(_PADDING) in common,
                "is a common or breached password; choose another",
            ),
        )
        return next((f"password: {why}" for refused, why in refusals if refused), None)

    def check(self, password: str, *, username: str | None = None) -> None:
        """Raise :class:`WeakPassword` unless ``password`` is acceptable for ``username``."""
        problem = self.problem(password, username=username)
        if problem is not None:
            raise WeakPassword(problem)


#: Back-office operators: privileged, so 12 characters at least (ASVS 2.1.1).
OPERATOR_PASSWORDS = PasswordPolicy(min_length=12)
