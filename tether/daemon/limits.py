"""Limits on what one peer may take: connections per address and in all, frames per session.

All are plain objects the server consults; none sleeps or does I/O itself, so they are
tested on a fake clock. A peer over its frame budget is *slowed*, never cut off and
never robbed of a frame: the server stops reading its socket until the budget refills
(TCP pushes back on the peer), so its frames are late, not lost. Connections are counted
from the moment they are accepted (issue 15, finding 6: counting finished WebSocket
upgrades only let half-open connections past the limit until the fds ran out).
"""

from __future__ import annotations

import collections
import enum
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


class Admission(enum.Enum):
    """What becomes of a connection just accepted."""

    ADMIT = "admit"
    """Served."""
    REFUSE = "refuse"
    """Over its address's limit: once upgraded it is told so (4029, with a retry_after), and
    it is cut if it does not upgrade within moments; counted meanwhile."""
    DROP = "drop"
    """Closed at once, before a byte of it is read: far over its address's limit, or over
    the limit on all connections. Not counted."""


class ConnectionLimits:
    """Open connections, counted from TCP accept until closed: per IP address (exempt
    networks, loopback by default, are not counted by address) and in all."""

    __slots__ = ("exempt", "limit", "open", "total", "total_limit")

    REFUSE_EXTRA = 8
    """Connections past an address's limit that are kept to be told why (4029): any more
    are dropped unanswered, so a flood from one address holds at most limit + 8 fds."""

    def __init__(self, limit: int, exempt: Iterable[Network], total_limit: int = 0) -> None:
        self.limit = limit
        self.exempt = tuple(exempt)
        self.total_limit = total_limit
        """The most connections open at once, 0 for no limit (tetherd derives it from its
        fd limit: :func:`connection_cap`)."""
        self.open: collections.Counter[str] = collections.Counter()
        self.total = 0

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

    def admit(self, host: str) -> tuple[Admission, str | None, str]:
        """Count a connection just accepted from ``host``: what becomes of it, the key to
        :meth:`release` it with (when it was counted: not dropped), and why it was shed
        (``address`` or ``total``; ``""`` when admitted)."""
        if self.total_limit and self.total >= self.total_limit:
            return Admission.DROP, None, "total"
        key = self.key(host)
        verdict = Admission.ADMIT
        if key is not None:
            count = self.open[key]
            if count >= self.limit + self.REFUSE_EXTRA:
                return Admission.DROP, None, "address"
            if count >= self.limit:
                verdict = Admission.REFUSE
            self.open[key] += 1
        self.total += 1
        return verdict, key, "" if verdict is Admission.ADMIT else "address"

    def release(self, key: str | None) -> None:
        """A connection counted by :meth:`admit` (under ``key``) closed."""
        self.total -= 1
        if key is None:
            return
        self.open[key] -= 1
        if self.open[key] <= 0:
            del self.open[key]


FD_RESERVE = 100
"""File descriptors kept for tetherd itself (its database and WAL, reader connections,
log, event loop, listening sockets) when the connection limit is derived from its fd limit."""


def connection_cap(open_files: int) -> int:
    """The most connections tetherd keeps open with ``open_files`` file descriptors: a
    tenth of them, and at least :data:`FD_RESERVE`, are kept for itself."""
    return max(16, open_files - max(FD_RESERVE, open_files // 10))


class ShedLog:
    """When to log connections shed: the first at once, then at most one line per reason
    every ``interval`` seconds, saying how many were shed since the last line (a flood is
    one line, not one per connection)."""

    __slots__ = ("_last", "_pending", "interval")

    def __init__(self, interval: float = 10.0) -> None:
        self.interval = interval
        self._pending: collections.Counter[str] = collections.Counter()
        self._last: dict[str, float] = {}

    def note(self, reason: str, now: float) -> int:
        """Count one connection shed for ``reason``; how many to log now (0: not yet)."""
        self._pending[reason] += 1
        if now - self._last.get(reason, -1e18) < self.interval:
            return 0
        self._last[reason] = now
        return self._pending.pop(reason)


class _Failures:
    """One address's failed logins."""

    __slots__ = ("count", "last", "logged_at", "unlogged", "until")

    def __init__(self) -> None:
        self.count = 0
        self.until = 0.0
        """When a login from it is looked at again."""
        self.last = 0.0
        """When it last failed."""
        self.logged_at = -1e18
        self.unlogged = 0
        """Failures since the last log line about it."""


class CredentialThrottle:
    """Failed logins and enrollments per address, and the backoff they earn (issue 15,
    finding 10: nothing slowed a guesser, 600-750 tries a second from one client).

    An address's first :attr:`free` failures cost nothing (typos); each one after waits
    twice as long as the one before, from :attr:`base` up to :attr:`cap` seconds. While it
    waits, its logins are refused unread. An address that has not failed for
    :attr:`forget` seconds starts over, and so does one that logs in. At most
    :attr:`capacity` addresses are kept (the least recently failed is forgotten first), so
    an attacker spraying addresses cannot grow it. IPv6 addresses count by their /64: an
    attacker holds a whole one.
    """

    __slots__ = ("_failures", "base", "cap", "capacity", "exempt", "forget", "free", "log_every")

    def __init__(self, exempt: Iterable[Network] = (), *, free: int = 5, base: float = 1.0, cap: float = 60.0,
                 forget: float = 900.0, capacity: int = 10_000, log_every: float = 60.0) -> None:
        self.exempt = tuple(exempt)
        self.free, self.base, self.cap, self.forget = free, base, cap, forget
        self.capacity = capacity
        self.log_every = log_every
        """Seconds between two log lines about one address."""
        self._failures: dict[str, _Failures] = {}
        """By address, least recently failed first."""

    def __len__(self) -> int:
        return len(self._failures)

    def key(self, host: str) -> str | None:
        """What ``host`` is counted as, or None if it is not (exempt, or not an IP address)."""
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return None
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if any(address in network for network in self.exempt):
            return None
        if isinstance(address, ipaddress.IPv6Address):
            return str(ipaddress.ip_network(f"{address}/64", strict=False))
        return str(address)

    def wait(self, host: str, now: float) -> float:
        """Seconds ``host`` must still wait before a login of it is looked at (0: go ahead)."""
        key = self.key(host)
        failures = self._failures.get(key) if key is not None else None
        return 0.0 if failures is None else max(0.0, failures.until - now)

    def failed(self, host: str, now: float) -> tuple[float, int]:
        """Count a failed login from ``host``: the seconds it must now wait before the next
        is looked at, and how many failures to log now (0: one was logged less than
        :attr:`log_every` ago; they are counted into the next line)."""
        key = self.key(host)
        if key is None:
            return 0.0, 0
        failures = self._failures.pop(key, None)
        if failures is None or now - failures.last >= self.forget:
            failures = _Failures() if failures is None else failures
            failures.count = 0
        while len(self._failures) >= self.capacity:
            del self._failures[next(iter(self._failures))]  # the least recently failed
        self._failures[key] = failures  # now the most recently failed
        failures.count += 1
        failures.last = now
        failures.unlogged += 1
        past = failures.count - self.free
        failures.until = now + (min(self.cap, self.base * 2.0 ** (past - 1)) if past > 0 else 0.0)
        to_log = 0
        if now - failures.logged_at >= self.log_every:
            to_log, failures.logged_at, failures.unlogged = failures.unlogged, now, 0
        return failures.until - now, to_log

    def succeeded(self, host: str) -> None:
        """``host`` logged in: its failures are forgotten."""
        key = self.key(host)
        if key is not None:
            self._failures.pop(key, None)
