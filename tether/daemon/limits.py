"""Limits on what one peer may take: connections per address, frames per session.

Both are plain objects the server consults; neither sleeps or does I/O itself, so they
are tested on a fake clock. A peer over its frame budget is *slowed*, never cut off
and never robbed of a frame: the server stops reading its socket until the budget
refills (TCP pushes back on the peer), so its frames are late, not lost.
"""

from __future__ import annotations

import collections
import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class FrameBudget:
    """A token bucket: ``rate`` frames a second on average, ``burst`` at once."""

    __slots__ = ("burst", "rate", "stamp", "tokens", "told_at")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = now
        self.told_at = -1e18
        """When the peer was last told it is rate-limited (tell at most once a second)."""

    def spend(self, cost: float, now: float) -> float:
        """Take ``cost`` frames from the budget; 0.0 if it had them, else how many seconds
        the caller must wait (the budget goes negative: that debt is the wait)."""
        elapsed = now - self.stamp
        if elapsed > 0:
            self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
            self.stamp = now
        self.tokens -= cost
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate

    def should_tell(self, now: float) -> bool:
        if now - self.told_at >= 1.0:
            self.told_at = now
            return True
        return False


class AddressLimiter:
    """Open connections per IP address, with exempt networks (loopback by default)."""

    __slots__ = ("exempt", "limit", "open")

    def __init__(self, limit: int, exempt: Iterable[Network]) -> None:
        self.limit = limit
        self.exempt = tuple(exempt)
        self.open: collections.Counter[str] = collections.Counter()

    def key(self, host: str) -> str | None:
        """What ``host`` is counted as (an IPv4-mapped IPv6 address as its IPv4 one), or
        None if it is not counted: exempt, no limit, or no IP address to count by."""
        if self.limit <= 0:
            return None
        try:
            address = ipaddress.ip_address(host)
        except ValueError:  # a Unix socket or an unknown peer
            return None
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if any(address in network for network in self.exempt):
            return None
        return str(address)

    def acquire(self, host: str) -> bool:
        """Count a new connection from ``host``; False (and nothing counted) if it is over."""
        key = self.key(host)
        if key is None:
            return True
        if self.open[key] >= self.limit:
            return False
        self.open[key] += 1
        return True

    def release(self, host: str) -> None:
        key = self.key(host)
        if key is None:
            return
        self.open[key] -= 1
        if self.open[key] <= 0:
            del self.open[key]
