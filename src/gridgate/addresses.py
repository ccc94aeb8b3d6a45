"""What one client is, when something is counted per client address.

Every per-address rule of the platform (rate limits, connection caps, failed attempts, SMS
sends) counts in the same unit, so one client cannot escape one rule by a trick that another
rule sees through.
"""

from __future__ import annotations

import functools
import ipaddress

__all__ = ["client_bucket"]


@functools.lru_cache(maxsize=65_536)  # IPv6 parsing is the slow part; clients repeat
def client_bucket(address: str) -> str:
    """An IPv4 address as it is; an IPv6 address as its /64; an IPv4-mapped one as the IPv4.

    One IPv6 subscriber is usually handed a whole /64, so counting single IPv6 addresses would
    give an attacker billions of fresh tallies. A zone id (``fe80::1%eth0``) is ignored. A
    value that is not an address (a test client's name) is its own bucket.
    """
    if ":" not in address:
        return address  # IPv4, or not an address: the common case costs one scan
    try:
        ip = ipaddress.IPv6Address(address.partition("%")[0])
    except ValueError:
        return address
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ipaddress.IPv6Network((ip, 64), strict=False))
