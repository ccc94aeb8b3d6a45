"""A client's bucket: its address, or its /64 for IPv6 (what every per-address limit counts)."""

from __future__ import annotations

import pytest

from gridgate.addresses import client_bucket


@pytest.mark.parametrize(
    ("address", "bucket"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        ("not-an-address", "not-an-address"),
    ],
)
def test_client_buckets(address: str, bucket: str) -> None:
    assert client_bucket(address) == bucket
