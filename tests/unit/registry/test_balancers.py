"""Load-balancing strategies: weight shares, exclusions, changing instance sets, key affinity."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

import pytest

from gridgate.registry.balancers import (
    BALANCERS,
    Balancer,
    ConsistentHash,
    LeastInFlight,
    RoundRobin,
    WeightedRandom,
    balancer,
    track,
)


@dataclass(frozen=True)
class Instance:
    """A registered instance as the registry client hands it to a balancer."""

    instance_id: str
    weight: int = 100
    host: str = "10.0.0.1"
    port: int = 8080


A, B, C = Instance("a", weight=1), Instance("b", weight=2), Instance("c", weight=7)
KEYS = [f"customer-{n:05d}" for n in range(10_000)]

STRATEGIES: dict[str, Callable[[], Balancer]] = {
    "round_robin": RoundRobin,
    "weighted_random": lambda: WeightedRandom(random.Random(7)),  # noqa: S311 - load balancing, not security
    "least_in_flight": LeastInFlight,
    "consistent_hash": ConsistentHash,
}


def picks(
    strategy: Balancer,
    endpoints: Sequence[Instance],
    count: int,
    *,
    exclude: Collection[str] = (),
) -> Counter[str]:
    """How often each instance is chosen over ``count`` sequential calls."""
    chosen: Counter[str] = Counter()
    for n in range(count):
        key = f"key-{n}" if isinstance(strategy, ConsistentHash) else None
        endpoint = strategy.pick(endpoints, key=key, exclude=exclude)
        assert endpoint is not None
        with track(strategy, endpoint.instance_id):
            chosen[endpoint.instance_id] += 1
    return chosen


# Behaviour every strategy shares.


@pytest.mark.parametrize("name", BALANCERS)
def test_empty_list_gives_none(name: str) -> None:
    assert STRATEGIES[name]().pick([], key="k") is None


@pytest.mark.parametrize("name", BALANCERS)
def test_everything_excluded_gives_none(name: str) -> None:
    assert STRATEGIES[name]().pick([A, B], key="k", exclude={"a", "b"}) is None


@pytest.mark.parametrize("name", BALANCERS)
def test_exclude_is_honoured(name: str) -> None:
    chosen = picks(STRATEGIES[name](), [A, B, C], 1_000, exclude={"c"})
    assert set(chosen) == {"a", "b"}


@pytest.mark.parametrize("name", BALANCERS)
def test_weight_zero_is_never_chosen(name: str) -> None:
    drained = Instance("drained", weight=0)
    chosen = picks(STRATEGIES[name](), [A, drained, B], 2_000)
    assert "drained" not in chosen


@pytest.mark.parametrize("name", BALANCERS)
def test_all_zero_weights_share_traffic(name: str) -> None:
    zero = [Instance(f"z{n}", weight=0) for n in range(3)]
    assert set(picks(STRATEGIES[name](), zero, 3_000)) == {"z0", "z1", "z2"}


@pytest.mark.parametrize("name", BALANCERS)
def test_zero_weight_is_the_last_resort_for_a_retry(name: str) -> None:
    drained = Instance("drained", weight=0)
    chosen = STRATEGIES[name]().pick([A, drained], key="k", exclude={"a"})
    assert chosen == drained


@pytest.mark.parametrize("name", BALANCERS)
def test_removed_instance_is_no_longer_chosen(name: str) -> None:
    strategy = STRATEGIES[name]()
    picks(strategy, [A, B, C], 100)
    assert set(picks(strategy, [A, B], 1_000)) == {"a", "b"}


def test_factory_builds_each_named_strategy_fresh() -> None:
    kinds = {name: type(balancer(name)) for name in BALANCERS}
    assert kinds == {
        "round_robin": RoundRobin,
        "weighted_random": WeightedRandom,
        "least_in_flight": LeastInFlight,
        "consistent_hash": ConsistentHash,
    }
    assert balancer("round_robin") is not balancer("round_robin")


def test_factory_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match="ewma"):
        balancer("ewma")


# Round-robin.


def test_round_robin_shares_are_exactly_the_weights() -> None:
    assert picks(RoundRobin(), [A, B, C], 10_000) == {"a": 1_000, "b": 2_000, "c": 7_000}


def test_round_robin_interleaves_heavy_instances() -> None:
    strategy = RoundRobin()
    sequence = [strategy.pick([A, B, C]) for _ in range(100)]
    ids = "".join(e.instance_id for e in sequence if e is not None)
    # Every window of one full cycle holds each instance exactly weight times ...
    for start in range(len(ids) - 9):
        assert Counter(ids[start : start + 10]) == {"a": 1, "b": 2, "c": 7}
    # ... and the heavy instance never takes its seven calls back to back.
    assert "cccc" not in ids


def test_round_robin_state_survives_a_rebuilt_list() -> None:
    strategy = RoundRobin()
    ids = ""
    for n in range(1_000):
        # The registry hands out fresh objects, in no fixed order, on every refresh.
        endpoints = [Instance(e.instance_id, e.weight) for e in (A, B, C)]
        chosen = strategy.pick(endpoints if n % 2 else endpoints[::-1])
        assert chosen is not None
        ids += chosen.instance_id
    for start in range(0, len(ids), 10):
        assert Counter(ids[start : start + 10]) == {"a": 1, "b": 2, "c": 7}


def test_round_robin_adapts_when_an_instance_joins() -> None:
    strategy = RoundRobin()
    picks(strategy, [A, B, C], 13)
    joined = Instance("d", weight=10)
    chosen = picks(strategy, [A, B, C, joined], 20_000)
    expected = {"a": 1_000, "b": 2_000, "c": 7_000, "d": 10_000}
    assert all(abs(chosen[i] - expected[i]) <= 2 for i in expected)


# Weighted random.


def test_weighted_random_follows_the_weights() -> None:
    strategy = WeightedRandom(random.Random(20_240_601))  # noqa: S311 - load balancing, not security
    chosen = picks(strategy, [A, B, C], 10_000)
    for instance in (A, B, C):
        assert chosen[instance.instance_id] / 10_000 == pytest.approx(
            instance.weight / 10, abs=0.02
        )


def test_weighted_random_is_reproducible_with_a_seed() -> None:
    def sequence() -> list[str]:
        strategy = WeightedRandom(random.Random(3))  # noqa: S311 - load balancing, not security
        return [e.instance_id for _ in range(50) if (e := strategy.pick([A, B, C]))]

    assert sequence() == sequence()


# Least in flight.


def test_least_in_flight_prefers_idle_instances() -> None:
    strategy = LeastInFlight()
    equal = [Instance("a"), Instance("b"), Instance("c")]
    strategy.acquire("a")
    strategy.acquire("b")
    strategy.acquire("b")
    assert strategy.pick(equal) == equal[2]
    strategy.acquire("c")
    # a and c now tie at one call each; b, with two, is left alone until they catch up.
    assert {strategy.pick(equal) for _ in range(10)} == {equal[0], equal[2]}


def test_least_in_flight_breaks_ties_by_weight() -> None:
    assert picks(LeastInFlight(), [A, B, C], 10_000) == {"a": 1_000, "b": 2_000, "c": 7_000}


def test_least_in_flight_counts_never_go_negative() -> None:
    strategy = LeastInFlight()
    for _ in range(3):
        strategy.release("a")  # a stray release, e.g. after the list was refreshed
    strategy.acquire("a")
    assert strategy.in_flight("a") == 1
    assert strategy.pick([Instance("a"), Instance("b")]) == Instance("b")
    strategy.release("a")
    strategy.release("a")
    assert strategy.in_flight("a") == 0


def test_track_releases_when_the_call_fails() -> None:
    strategy = LeastInFlight()
    with pytest.raises(TimeoutError), track(strategy, "a"):
        assert strategy.in_flight("a") == 1
        raise TimeoutError
    assert strategy.in_flight("a") == 0


# Consistent hash.


def test_consistent_hash_sends_a_key_to_the_same_instance() -> None:
    strategy = ConsistentHash()
    endpoints = [Instance(f"i{n}") for n in range(10)]
    first = {key: strategy.pick(endpoints, key=key) for key in KEYS[:500]}
    shuffled = endpoints[::-1]
    assert {key: strategy.pick(shuffled, key=key) for key in KEYS[:500]} == first
    # A new balancer (another gateway node, another process) agrees: the hash is stable.
    assert {key: ConsistentHash().pick(endpoints, key=key) for key in KEYS[:500]} == first


def test_consistent_hash_placement_is_the_same_in_every_process() -> None:
    # Pinned values: a salted hash (Python's hash()) would differ between gateway nodes.
    endpoints = [Instance(f"i{n}") for n in range(10)]
    customers = ["3201000001", "3201000002", "3201000003", "3201000004", "3201000005"]
    chosen = [ConsistentHash().pick(endpoints, key=customer_no) for customer_no in customers]
    assert [e.instance_id for e in chosen if e] == ["i6", "i4", "i0", "i9", "i2"]


def test_consistent_hash_removing_one_of_ten_moves_only_its_keys() -> None:
    strategy = ConsistentHash()
    endpoints = [Instance(f"i{n}") for n in range(10)]
    before = {key: strategy.pick(endpoints, key=key) for key in KEYS}
    gone = endpoints[3]
    after = {key: strategy.pick([e for e in endpoints if e != gone], key=key) for key in KEYS}
    moved = [key for key in KEYS if after[key] != before[key]]
    assert {before[key] for key in moved} == {gone}
    assert 700 <= len(moved) <= 1_300


def test_consistent_hash_new_instance_only_takes_keys() -> None:
    strategy = ConsistentHash()
    endpoints = [Instance(f"i{n}") for n in range(9)]
    before = {key: strategy.pick(endpoints, key=key) for key in KEYS}
    joined = Instance("i9")
    after = {key: strategy.pick([*endpoints, joined], key=key) for key in KEYS}
    assert {after[key] for key in KEYS if after[key] != before[key]} == {joined}


def test_consistent_hash_exclude_moves_only_the_excluded_keys() -> None:
    strategy = ConsistentHash()
    endpoints = [Instance(f"i{n}") for n in range(5)]
    before = {key: strategy.pick(endpoints, key=key) for key in KEYS[:2_000]}
    retried = {key: strategy.pick(endpoints, key=key, exclude={"i0"}) for key in KEYS[:2_000]}
    changed = {key for key in before if retried[key] != before[key]}
    assert changed == {key for key, e in before.items() if e is not None and e.instance_id == "i0"}


def test_consistent_hash_follows_the_weights_roughly() -> None:
    strategy = ConsistentHash()
    weighted = [Instance("a", weight=10), Instance("b", weight=20), Instance("c", weight=70)]
    chosen = Counter(e.instance_id for key in KEYS if (e := strategy.pick(weighted, key=key)))
    # Virtual nodes make shares approximate; 16 of them for weight 10 give a few percent error.
    for instance in weighted:
        assert chosen[instance.instance_id] / len(KEYS) == pytest.approx(
            instance.weight / 100, abs=0.05
        )


def test_consistent_hash_without_key_round_robins() -> None:
    strategy = ConsistentHash()
    chosen = Counter(
        e.instance_id for _ in range(3_000) if (e := strategy.pick([A, B, C], key=None))
    )
    assert chosen == {"a": 300, "b": 600, "c": 2_100}
