"""The limits' arithmetic on a fake clock: the token bucket and the per-address count."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.daemon.limits import AddressLimiter, FrameBudget

LOOPBACK = [ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")]


def test_a_burst_is_free_then_the_debt_is_the_wait() -> None:
    budget = FrameBudget(rate=100, burst=50, now=0.0)
    assert budget.spend(50, 0.0) == 0.0
    assert budget.spend(10, 0.0) == pytest.approx(0.1)  # 10 frames in debt at 100/s
    assert budget.spend(0, 0.1) == 0.0  # the debt was paid by waiting
    assert budget.spend(20, 0.3) == 0.0  # 0.2 s refilled 20


def test_the_budget_refills_only_up_to_the_burst() -> None:
    budget = FrameBudget(rate=100, burst=50, now=0.0)
    assert budget.spend(50, 3600.0) == 0.0
    assert budget.spend(1, 3600.0) > 0


def test_the_peer_is_told_at_most_once_a_second() -> None:
    budget = FrameBudget(rate=1, burst=1, now=0.0)
    assert budget.should_tell(5.0)
    assert not budget.should_tell(5.5)
    assert budget.should_tell(6.0)


@settings(max_examples=200, deadline=None)
@given(costs=st.lists(st.tuples(st.integers(1, 500), st.floats(0, 0.5)), min_size=1, max_size=200))
def test_a_sender_that_waits_as_told_never_beats_the_rate(costs: list[tuple[int, float]]) -> None:
    """Whatever it sends, a peer that waits what spend() says gets at most burst + rate * t."""
    rate, burst = 1000.0, 200
    budget = FrameBudget(rate, burst, 0.0)
    now = sent = 0.0
    for cost, pause in costs:
        now += pause
        sent += cost
        now += budget.spend(cost, now)
        assert sent <= burst + rate * now + 1e-6


def test_connections_are_counted_per_address_and_released() -> None:
    limiter = AddressLimiter(2, LOOPBACK)
    assert limiter.acquire("10.0.0.1") and limiter.acquire("10.0.0.1")
    assert not limiter.acquire("10.0.0.1")
    assert limiter.acquire("10.0.0.2")
    limiter.release("10.0.0.1")
    assert limiter.acquire("10.0.0.1")
    for _ in range(2):
        limiter.release("10.0.0.1")
    limiter.release("10.0.0.2")
    assert limiter.open == {}


def test_exempt_networks_mapped_addresses_and_no_limit() -> None:
    limiter = AddressLimiter(1, LOOPBACK)
    for host in ("127.0.0.1", "127.9.9.9", "::1", "::ffff:127.0.0.1", "", "not-an-ip"):
        assert all(limiter.acquire(host) for _ in range(5)), host
    assert limiter.acquire("::ffff:10.0.0.1") and not limiter.acquire("10.0.0.1")
    unlimited = AddressLimiter(0, [])
    assert all(unlimited.acquire("10.0.0.1") for _ in range(100))
    assert unlimited.open == {}
