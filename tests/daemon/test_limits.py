"""The limits' arithmetic on a fake clock: the token bucket, connections per address and in all, the shed log."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.daemon.limits import (
    Admission,
    ConnectionLimits,
    CredentialThrottle,
    FrameBudget,
    ShedLog,
    connection_cap,
)

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


ADMIT, REFUSE, DROP = Admission.ADMIT, Admission.REFUSE, Admission.DROP


def admit(limits: ConnectionLimits, host: str) -> Admission:
    return limits.admit(host)[0]


def test_connections_are_counted_per_address_and_released() -> None:
    limits = ConnectionLimits(2, LOOPBACK)
    assert [admit(limits, "10.0.0.1") for _ in range(2)] == [ADMIT, ADMIT]
    assert limits.admit("10.0.0.1") == (REFUSE, "10.0.0.1", "address")
    assert admit(limits, "10.0.0.2") is ADMIT
    assert limits.total == 4
    for _ in range(2):
        limits.release("10.0.0.1")
    assert admit(limits, "10.0.0.1") is ADMIT
    for _ in range(2):
        limits.release("10.0.0.1")
    limits.release("10.0.0.2")
    assert limits.open == {} and limits.total == 0


def test_far_over_an_address_limit_connections_are_dropped_uncounted() -> None:
    limits = ConnectionLimits(3, [])
    verdicts = [admit(limits, "10.0.0.1") for _ in range(3 + ConnectionLimits.REFUSE_EXTRA + 5)]
    assert verdicts == [ADMIT] * 3 + [REFUSE] * ConnectionLimits.REFUSE_EXTRA + [DROP] * 5
    assert limits.admit("10.0.0.1") == (DROP, None, "address")
    assert limits.open["10.0.0.1"] == limits.total == 3 + ConnectionLimits.REFUSE_EXTRA


def test_the_limit_on_all_connections_counts_exempt_ones_too() -> None:
    limits = ConnectionLimits(100, LOOPBACK, total_limit=3)
    assert [admit(limits, h) for h in ("127.0.0.1", "10.0.0.1", "10.0.0.2")] == [ADMIT] * 3
    assert limits.admit("10.0.0.3") == (DROP, None, "total")
    assert limits.admit("127.0.0.1") == (DROP, None, "total")
    limits.release(None)
    assert admit(limits, "127.0.0.1") is ADMIT


def test_exempt_networks_mapped_addresses_and_no_limit() -> None:
    limits = ConnectionLimits(1, LOOPBACK)
    for host in ("127.0.0.1", "127.9.9.9", "::1", "::ffff:127.0.0.1", "", "not-an-ip"):
        assert all(admit(limits, host) is ADMIT for _ in range(5)), host
    assert admit(limits, "::ffff:10.0.0.1") is ADMIT and admit(limits, "10.0.0.1") is REFUSE
    unlimited = ConnectionLimits(0, [])
    assert all(admit(unlimited, "10.0.0.1") is ADMIT for _ in range(100))
    assert unlimited.open == {} and unlimited.total == 100


@pytest.mark.parametrize(("open_files", "cap"), [(256, 156), (1024, 922), (65_536, 58_983), (50, 16)])
def test_the_connection_cap_keeps_file_descriptors_for_tetherd(open_files: int, cap: int) -> None:
    assert connection_cap(open_files) == cap


def test_shedding_is_logged_once_per_reason_and_interval_with_the_count() -> None:
    shed = ShedLog(interval=10.0)
    assert shed.note("address", 0.0) == 1  # the first at once
    assert [shed.note("address", t) for t in (1.0, 2.0, 9.9)] == [0, 0, 0]
    assert shed.note("total", 5.0) == 1  # each reason on its own
    assert shed.note("address", 10.0) == 4  # the three held back, and this one
    assert shed.note("address", 10.5) == 0


def test_failed_logins_past_the_free_ones_double_the_wait() -> None:
    throttle = CredentialThrottle(free=3, base=1.0, cap=8.0)
    waits = [throttle.failed("10.0.0.1", 0.0)[0] for _ in range(8)]
    assert waits == [0.0, 0.0, 0.0, 1.0, 2.0, 4.0, 8.0, 8.0]
    assert throttle.wait("10.0.0.1", 5.0) == 3.0
    assert throttle.wait("10.0.0.2", 0.0) == 0.0  # another address is not slowed
    assert throttle.wait("10.0.0.1", 8.0) == 0.0


def test_a_login_forgets_the_failures_and_so_does_time() -> None:
    throttle = CredentialThrottle(free=1, base=1.0, forget=100.0)
    for _ in range(4):
        throttle.failed("10.0.0.1", 0.0)
    assert throttle.wait("10.0.0.1", 0.0) > 0
    throttle.succeeded("10.0.0.1")
    assert throttle.wait("10.0.0.1", 0.0) == 0 and len(throttle) == 0
    for _ in range(4):
        throttle.failed("10.0.0.2", 0.0)
    assert throttle.failed("10.0.0.2", 100.0)[0] == 0.0  # a fresh start: the first failure is free


def test_failures_are_logged_once_per_address_and_interval_with_their_count() -> None:
    throttle = CredentialThrottle(log_every=60.0)
    logged = [throttle.failed("10.0.0.1", float(t))[1] for t in range(0, 130, 10)]
    assert logged == [1, 0, 0, 0, 0, 0, 6, 0, 0, 0, 0, 0, 6]
    assert throttle.failed("10.0.0.2", 5.0)[1] == 1


def test_an_address_spraying_attacker_cannot_grow_the_throttle() -> None:
    throttle = CredentialThrottle(capacity=100)
    for i in range(10_000):
        throttle.failed(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", float(i))
    assert len(throttle) == 100
    assert throttle.wait("10.0.39.15", 10_000.0) == 0.0  # the newest are kept ...
    assert throttle.key("10.0.39.15") in throttle._failures and throttle.key("10.0.0.0") not in throttle._failures


def test_ipv6_counts_by_64_and_exempt_networks_are_not_throttled() -> None:
    throttle = CredentialThrottle(LOOPBACK, free=0)
    throttle.failed("2001:db8::1", 0.0)
    assert throttle.wait("2001:db8::ffff:1", 0.0) > 0  # the same /64
    assert throttle.wait("2001:db8:0:1::1", 0.0) == 0
    for host in ("127.0.0.1", "::1", "::ffff:127.0.0.1", "not-an-ip"):
        assert throttle.failed(host, 0.0) == (0.0, 0) and throttle.wait(host, 0.0) == 0
    throttle.failed("::ffff:10.0.0.1", 0.0)
    assert throttle.wait("10.0.0.1", 0.0) > 0
