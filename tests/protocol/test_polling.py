"""Polling and schedule rules (XSOAR "Scheduled Commands"): the floor, the timeout, bad values."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether.protocol.polling import (
    DEFAULT_MIN_INTERVAL,
    DEFAULT_POLL_TIMEOUT,
    MAX_SECONDS,
    InvalidSchedule,
    PollPlan,
    check_period,
    fmt_duration,
    parse_duration,
    plan_next_run,
)


def test_xsoar_numbers() -> None:
    assert DEFAULT_MIN_INTERVAL == 10.0  # "it will never be less than 10 seconds"
    assert DEFAULT_POLL_TIMEOUT == 600.0  # polling_function's default timeout


def test_an_interval_at_or_above_the_floor_is_kept() -> None:
    assert plan_next_run(30, 120, 10.0) == PollPlan(30.0, 120.0, "")
    assert plan_next_run(10, None, 10.0) == PollPlan(10.0, DEFAULT_POLL_TIMEOUT, "")


def test_an_interval_below_the_floor_is_raised_and_said_so() -> None:
    plan = plan_next_run(3, None, 10.0)
    assert plan.interval == 10.0
    assert plan.note == "next run asked for in 3 s; raised to the 10 s floor"
    assert plan_next_run(0, 5, 0.5) == PollPlan(0.5, 5.0, "next run asked for in 0 s; raised to the 0.5 s floor")


def test_negative_intervals_are_raised_too_and_a_zero_timeout_is_not_given() -> None:
    """CommonServerPython ``ScheduledCommand.__init__``: ``if next_run_in_seconds < 10``
    it is set to 10; ``self._timeout = str(timeout_in_seconds) if timeout_in_seconds else None``."""
    assert plan_next_run(-5, None, 10.0) == PollPlan(10.0, DEFAULT_POLL_TIMEOUT,
                                                     "next run asked for in -5 s; raised to the 10 s floor")
    assert plan_next_run(30, 0, 10.0) == PollPlan(30.0, DEFAULT_POLL_TIMEOUT, "")
    assert plan_next_run(-1, 90, 10.0).timeout == 90.0


@pytest.mark.parametrize(
    ("next_in", "timeout", "message"),
    [
        (-MAX_SECONDS - 1, None, "next_run_in_seconds must be at least 0 seconds"),
        (math.nan, None, "next_run_in_seconds must be a finite number of seconds, not nan"),
        (math.inf, None, "must be a finite number"),
        (True, None, "must be a finite number of seconds, not True"),
        ("30", None, "not '30'"),
        (MAX_SECONDS + 1, None, "is more than a year"),
        (30, -5, "timeout_in_seconds must be more than 0 seconds"),
        (30, 1e12, "timeout_in_seconds of 1e+12 s is more than a year"),
    ],
)
def test_negative_or_absurd_values_are_refused(next_in: object, timeout: object, message: str) -> None:
    with pytest.raises(InvalidSchedule) as caught:
        plan_next_run(next_in, timeout, 10.0)  # type: ignore[arg-type]
    assert message in str(caught.value)


def test_schedule_period() -> None:
    assert check_period(300, 10.0) == 300.0
    with pytest.raises(InvalidSchedule, match="every 2s is below the 10s floor"):
        check_period(2, 10.0)
    with pytest.raises(InvalidSchedule, match="more than 0"):
        check_period(0, 10.0)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90.0), ("2.5", 2.5), ("30s", 30.0), ("5m", 300.0), ("1h30m", 5400.0), ("2d", 172_800.0),
     ("1w", 604_800.0), ("250ms", 0.25), (" 1H 5S ", 3605.0)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5x", "m5", "-5m", "5m-", "1.2.3s", "five"])
def test_parse_duration_refuses_nonsense(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(300, "5m"), (90, "1m30s"), (5400, "1h30m"), (604_800 + 3600, "1w1h"), (2.5, "2.5s"), (0, "0s"), (1, "1s")],
)
def test_fmt_duration(seconds: float, text: str) -> None:
    assert fmt_duration(seconds) == text


@given(st.integers(min_value=1, max_value=10**8))
def test_fmt_and_parse_round_trip(seconds: int) -> None:
    assert parse_duration(fmt_duration(seconds)) == seconds
