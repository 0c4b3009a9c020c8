"""Reconnect delays: exponential ceiling, full jitter, cap, retry_after."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether.agent.backoff import full_jitter, reconnect_delay


def test_ceiling_doubles_per_attempt_up_to_the_cap() -> None:
    ceilings = [full_jitter(n, base=0.2, cap=30.0, rand=lambda: 1.0) for n in range(10)]
    assert ceilings == pytest.approx([0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 30.0, 30.0])


def test_jitter_scales_the_whole_interval_down_to_zero() -> None:
    assert full_jitter(3, base=0.2, cap=30.0, rand=lambda: 0.0) == 0.0
    assert full_jitter(3, base=0.2, cap=30.0, rand=lambda: 0.5) == pytest.approx(0.8)


def test_jitter_spreads_a_storm_over_the_whole_interval() -> None:
    rng = random.Random(7)
    delays = [full_jitter(20, base=0.2, cap=30.0, rand=rng.random) for _ in range(2000)]
    assert min(delays) < 0.5 and max(delays) > 29.5
    assert sum(delays) / len(delays) == pytest.approx(15.0, rel=0.1)


def test_huge_attempt_numbers_stay_finite() -> None:
    assert full_jitter(100_000, base=0.2, cap=30.0, rand=lambda: 1.0) == 30.0


def test_retry_after_is_a_floor_with_jitter_on_top() -> None:
    assert reconnect_delay(0, base=0.2, cap=30.0, rand=lambda: 0.0, retry_after=5.0) == 5.0
    assert reconnect_delay(0, base=0.2, cap=30.0, rand=lambda: 1.0, retry_after=5.0) == pytest.approx(5.2)
    assert reconnect_delay(2, base=0.2, cap=30.0, rand=lambda: 1.0) == pytest.approx(0.8)


def test_nonsense_is_refused() -> None:
    with pytest.raises(ValueError, match="attempt"):
        full_jitter(-1, base=0.2, cap=30.0, rand=random.random)
    with pytest.raises(ValueError, match="base and cap"):
        full_jitter(0, base=-1, cap=30.0, rand=random.random)


@given(
    attempt=st.integers(min_value=0, max_value=10_000),
    base=st.floats(min_value=0.0, max_value=10.0),
    cap=st.floats(min_value=0.0, max_value=3600.0),
    r=st.floats(min_value=0.0, max_value=1.0),
    retry_after=st.none() | st.floats(min_value=0.0, max_value=600.0),
)
def test_delay_is_between_retry_after_and_retry_after_plus_ceiling(
    attempt: int, base: float, cap: float, r: float, retry_after: float | None
) -> None:
    delay = reconnect_delay(attempt, base=base, cap=cap, rand=lambda: r, retry_after=retry_after)
    floor = retry_after or 0.0
    assert floor <= delay <= floor + min(cap, base * 2.0 ** min(attempt, 64))
