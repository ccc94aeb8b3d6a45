"""Field rules (数据控制): drop or mask parts of a JSON response by the caller's level.

A rule ``FieldRule(path, action, below_level)`` applies to callers whose level is below
``below_level``. A path is dot-separated object keys; ``[]`` after a key (or at the start, for
a top-level array) steps into every element of an array: ``name``, ``customer.address``,
``items[].lines[].amount``, ``[].phone``, ``grid[][].x``. A path always ends with a key.
An action is ``drop`` or ``mask:<kind>`` with a kind of :data:`gridgate.pii.MASKS`.

Rules compile once into one trie per level, so filtering a response is a single walk that
only visits the ruled keys. When rules meet:

* ``drop`` wins over any mask on the same field, and over masks of its ancestors;
* two masks on the same field: the first declared is kept;
* a mask on a field inside a masked object wins for that field (the most specific rule).

A masked field holding an object or array has every string and number inside it masked, so
nothing of the original survives; numbers become masked strings. ``null`` and booleans are
kept: they carry no personal data in any kind's format. Missing paths, and steps that meet
another shape than they expect (a key on an array, ``[]`` on an object), are ignored.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final, TypeAlias

import orjson

from gridgate.errors import UpstreamBadResponse
from gridgate.pii import MASKS

__all__ = [
    "EACH",
    "LEVELS",
    "FieldFilter",
    "FieldRule",
    "Step",
    "compile_rules",
    "filter_body",
    "parse_action",
    "parse_path",
]

#: A step of a path: an object key, or :data:`EACH` for every element of an array.
Step: TypeAlias = str
#: ``[]`` can never be a key (keys match ``_KEY``), so it safely marks the array step.
EACH: Final[Step] = "[]"
#: Account levels: 0 registered, 1 primary (户号 bound), 2 advanced (real name verified).
LEVELS: Final = (0, 1, 2)

_KEY: Final = r"[A-Za-z_][A-Za-z0-9_\-]*"
_SEGMENT: Final = re.compile(rf"(?P<key>{_KEY})?(?P<each>(?:\[\])*)")
_DROP: Final = "drop"
_MASK_PREFIX: Final = "mask:"

_Mask: TypeAlias = Callable[[str], str]


@dataclass(frozen=True, slots=True)
class FieldRule:
    """Drop or mask the field at ``path`` for callers whose level is below ``below_level``."""

    path: str
    action: str
    below_level: int


def parse_path(path: str) -> tuple[Step, ...]:
    """The steps of ``path`` (``items[].address`` → items, [], address), or ValueError."""
    if not path:
        raise ValueError("a path names at least one field")
    steps: list[Step] = []
    for position, segment in enumerate(path.split(".")):
        match = _SEGMENT.fullmatch(segment)
        if not segment or match is None:
            raise ValueError(
                f"{segment!r} is not a field: a field starts with a letter or _ and holds "
                "letters, digits, _ and -, optionally followed by []"
            )
        key, each = match.group("key"), match.group("each")
        if key is None and position > 0:
            # "a.[].b" would mean "a[].b"; one spelling keeps rules comparable in the admin UI.
            raise ValueError(f"{segment!r}: [] follows a field name, or starts the path")
        if key is not None:
            steps.append(key)
        steps.extend(EACH for _ in range(len(each) // 2))
    if steps[-1] == EACH:
        # Masking a field already masks every element of its array; dropping every element
        # would leave an empty array that says less than dropping the field.
        raise ValueError("a path ends with a field name, not []")
    return tuple(steps)


def parse_action(action: str) -> str | None:
    """The mask kind of ``action`` (``mask:<kind>``), None for ``drop``, or ValueError."""
    if action == _DROP:
        return None
    if action.startswith(_MASK_PREFIX):
        kind = action[len(_MASK_PREFIX) :]
        if kind in MASKS:
            return kind
        raise ValueError(f"unknown mask kind {kind!r}: one of {', '.join(sorted(MASKS))}")
    raise ValueError(f"unknown action {action!r}: drop or mask:<kind>")


@dataclass(slots=True, eq=False)
class _Node:
    """One step of a level's plan: what to do with the value here, and the steps below."""

    children: dict[str, _Node] = field(default_factory=dict)
    each: _Node | None = None
    drop: bool = False
    mask: _Mask | None = None


def _insert(root: _Node, steps: tuple[Step, ...], kind: str | None) -> None:
    node = root
    for step in steps:
        if step == EACH:
            node.each = node.each or _Node()
            node = node.each
        else:
            node = node.children.setdefault(step, _Node())
    if kind is None:
        node.drop = True
    elif node.mask is None:  # the first declared mask of a field is kept
        node.mask = MASKS[kind]


def _prune(node: _Node) -> None:
    # Below a dropped field nothing is left to do; freeing the subtree keeps the walk short.
    for child in node.children.values():
        if child.drop:
            child.children.clear()
            child.each = None
        else:
            _prune(child)
    if node.each is not None:
        _prune(node.each)


def _walk(value: Any, node: _Node) -> None:
    # Only the ruled keys are visited; containers are changed in place (no copies).
    if type(value) is dict:
        for key, child in node.children.items():
            if key not in value:
                continue
            if child.drop:
                del value[key]
            elif child.mask is not None:
                value[key] = _masked(value[key], child.mask, child)
            else:
                _walk(value[key], child)
    elif type(value) is list and node.each is not None:
        each = node.each
        for item in value:
            _walk(item, each)


def _masked(value: Any, mask: _Mask, node: _Node | None) -> Any:
    if type(value) is str:
        return mask(value)
    if type(value) is int or type(value) is float:  # never bool: type() is exact
        return mask(str(value))
    if type(value) is dict:
        children = node.children if node is not None else None
        if children:
            for key, ruled in children.items():
                if ruled.drop:
                    value.pop(key, None)
        # Assigning to existing keys while iterating is safe: the dict's size does not change.
        for key, item in value.items():
            child = children.get(key) if children else None
            if child is None:
                value[key] = _masked(item, mask, None)
            else:
                value[key] = _masked(item, child.mask or mask, child)
    elif type(value) is list:
        each = node.each if node is not None else None
        for index, item in enumerate(value):
            value[index] = _masked(item, mask, each)
    return value


class FieldFilter:
    """Field rules compiled per level; :meth:`apply` filters a parsed JSON document."""

    __slots__ = ("_plans",)

    def __init__(self, plans: dict[int, _Node]) -> None:
        self._plans = plans

    def applies(self, level: int) -> bool:
        """Whether any rule hits callers of ``level`` (if not, the body needs no parsing)."""
        if level not in LEVELS:
            raise ValueError(f"unknown level {level!r}")
        return level in self._plans

    def apply(self, document: Any, level: int) -> Any:
        """``document`` filtered for ``level``, changed in place (the caller owns it)."""
        if self.applies(level):
            _walk(document, self._plans[level])
        return document


def compile_rules(rules: Iterable[FieldRule]) -> FieldFilter:
    """The rules compiled into one plan per level; ValueError names the path of a bad rule."""
    plans: dict[int, _Node] = {}
    for rule in rules:
        try:
            steps, kind = parse_path(rule.path), parse_action(rule.action)
            if not LEVELS[0] < rule.below_level <= LEVELS[-1] + 1:
                raise ValueError(f"below_level is {LEVELS[0] + 1}..{LEVELS[-1] + 1}")
        except ValueError as error:
            raise ValueError(f"field rule {rule.path!r}: {error}") from None
        for level in range(LEVELS[0], rule.below_level):
            _insert(plans.setdefault(level, _Node()), steps, kind)
    for plan in plans.values():
        _prune(plan)
    return FieldFilter(plans)


def _is_json(content_type: str | None) -> bool:
    if content_type is None:
        return False
    media_type = content_type.partition(";")[0].strip().lower()
    return media_type == "application/json" or media_type.endswith("+json")


def filter_body(body: bytes, content_type: str | None, flt: FieldFilter, level: int) -> bytes:
    """A response body filtered for ``level``; non-JSON passes, broken JSON raises 502.

    ``body`` must be decoded already (no ``Content-Encoding``): compressed JSON does not parse.
    """
    if not body or not flt.applies(level) or not _is_json(content_type):
        return body
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        # Passing it on raw would leak exactly the fields the rules are there to hide.
        raise UpstreamBadResponse(
            "the business system's answer claims to be JSON but does not parse"
        ) from None
    return orjson.dumps(flt.apply(document, level))
