"""Each agent's alert rate limit: a burst, then the rate; the excess counted and handed to
the store at most every DROPS_WRITE_EVERY seconds (or when forced)."""

from __future__ import annotations

from tether.daemon.alerts import DROPS_WRITE_EVERY, AlertLimits


def test_a_burst_then_the_rate_per_agent() -> None:
    limits = AlertLimits(per_minute=60, burst=10)
    assert limits.admit("a", 25, now=0.0) == 10
    assert limits.admit("b", 3, now=0.0) == 3  # another agent has its own bucket
    assert limits.admit("a", 5, now=2.0) == 2  # one a second came back
    assert limits.admit("a", 100, now=1000.0) == 10  # never more than the burst
    assert limits.dropped_total == 15 + 3 + 90


def test_dropped_counts_are_written_seldom_unless_forced() -> None:
    limits = AlertLimits(per_minute=60, burst=1)
    limits.admit("a", 5, now=100.0)
    assert limits.take_dropped("a", now=100.0) == 0  # written at most every DROPS_WRITE_EVERY
    assert limits.take_dropped("a", now=100.0 + DROPS_WRITE_EVERY) == 4
    assert limits.take_dropped("a", now=200.0, force=True) == 0  # nothing left
    assert limits.admit("a", 3, now=200.5) == 1  # the bucket refilled to its burst, 1
    assert limits.take_dropped("a", now=200.5, force=True) == 2
    limits.give_back("a", 2)  # the write failed: counted again
    assert limits.take_dropped("a", now=200.5, force=True) == 2
    assert limits.take_dropped("nobody", now=0.0, force=True) == 0
