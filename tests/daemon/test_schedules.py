"""When recurring schedules fire (``daemon/schedules.py``): every-grids, cron, missed firings."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from tether.daemon import schedules
from tether.daemon.schedules import MAX_MISSED_COUNTED, check_cron, missed_between, next_fire
from tether.daemon.store import Timing
from tether.protocol import ErrorCode, ProtocolError

ANCHOR = 1_800_000_000.0


def every(seconds: float, anchor: float = ANCHOR) -> Timing:
    return Timing(every=seconds, cron=None, timezone="UTC", anchor=anchor)


def cron(expression: str, timezone: str = "UTC") -> Timing:
    return Timing(every=None, cron=expression, timezone=timezone, anchor=ANCHOR)


def at(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


# -- every ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("after", "expected"),
    [
        (ANCHOR, ANCHOR + 300),  # the first firing is one period after the schedule was added
        (ANCHOR + 1, ANCHOR + 300),
        (ANCHOR + 299.999, ANCHOR + 300),
        (ANCHOR + 300, ANCHOR + 600),  # strictly after: a firing at `after` is not the next one
        (ANCHOR + 301, ANCHOR + 600),
        (ANCHOR + 10 * 300 + 150, ANCHOR + 11 * 300),  # long after: still on the grid
        (ANCHOR - 5000, ANCHOR + 300),  # a clock before the anchor: never before the first firing
    ],
)
def test_every_fires_on_the_grid_of_its_anchor(after: float, expected: float) -> None:
    assert next_fire(every(300), after) == expected


@given(
    anchor=st.floats(1e9, 4e9),
    period=st.one_of(st.floats(0.001, 366 * 86400.0), st.integers(1, 366 * 86400).map(float)),
    offset=st.floats(0, 1e9),
)
@example(anchor=ANCHOR, period=300.0, offset=600.0)  # exactly on a firing
@example(anchor=ANCHOR, period=0.1, offset=0.3)  # on a firing, as far as rounding can tell
@example(anchor=1191242247.200328, period=811.6058362714215, offset=540767287.4667943)  # when - period > after
def test_every_is_the_first_grid_point_strictly_after(anchor: float, period: float, offset: float) -> None:
    after = anchor + offset
    when = next_fire(every(period, anchor), after)
    assert when > after
    k = round((when - anchor) / period)
    assert k >= 1 and abs(anchor + k * period - when) <= 4 * math.ulp(when)  # on the grid, up to rounding
    # No grid point between `after` and it was skipped: when - period <= after, but `when - period`
    # rounds on its own, so the point before is computed as the grid's points are.
    assert k == 1 or anchor + (k - 1) * period <= after


# -- cron ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("*/5 * * * *", "2027-01-15T12:03:00+00:00", "2027-01-15T12:05:00+00:00"),
        ("*/5 * * * *", "2027-01-15T12:05:00+00:00", "2027-01-15T12:10:00+00:00"),  # strictly after
        ("*/5 * * * *", "2027-01-15T12:04:59.500000+00:00", "2027-01-15T12:05:00+00:00"),
        ("0 3 * * 1", "2027-01-15T12:00:00+00:00", "2027-01-18T03:00:00+00:00"),  # next Monday
        ("0 0 29 2 *", "2027-03-01T00:00:00+00:00", "2028-02-29T00:00:00+00:00"),  # the next leap day
    ],
)
def test_cron_next_in_utc(expression: str, after: str, expected: str) -> None:
    assert utc(next_fire(cron(expression), at(after))) == expected


def test_cron_is_read_in_its_time_zone_across_a_dst_change() -> None:
    nine = cron("0 9 * * *", "Europe/Paris")
    # 09:00 in Paris is 08:00 UTC in winter and 07:00 UTC in summer (clocks go forward on 2027-03-28).
    firings = []
    when = at("2027-03-26T12:00:00+00:00")
    for _ in range(4):
        when = next_fire(nine, when)
        firings.append(utc(when))
    assert firings == ["2027-03-27T08:00:00+00:00", "2027-03-28T07:00:00+00:00",
                       "2027-03-29T07:00:00+00:00", "2027-03-30T07:00:00+00:00"]
    assert utc(next_fire(cron("0 9 * * *"), at("2027-03-27T12:00:00+00:00"))) == "2027-03-28T09:00:00+00:00"


@pytest.mark.parametrize("expression", ["0 0 31 2 *", "0 0 30 2 *"])
def test_a_cron_that_matches_no_date_never_fires(expression: str) -> None:
    check_cron(expression, "UTC")  # readable, just impossible: schedule.add says so
    assert next_fire(cron(expression), ANCHOR) == math.inf


@pytest.mark.parametrize(
    ("expression", "timezone", "message"),
    [
        ("* * * *", "UTC", "give five fields"),
        ("* * * * * *", "UTC", "give five fields"),  # croniter's seconds field is not cron
        ("@daily", "UTC", "give five fields"),
        ("   ", "UTC", "give five fields"),
        ("61 * * * *", "UTC", "invalid cron expression '61 * * * *'"),
        ("0 0 * * 8", "UTC", "invalid cron expression '0 0 * * 8'"),
        ("every five minutes", "UTC", "give five fields"),
        ("a b c d e", "UTC", "invalid cron expression 'a b c d e'"),
        ("*/5 * * * *", "Mars/Olympus", "unknown time zone 'Mars/Olympus'"),
        ("*/5 * * * *", "../../etc/passwd", "unknown time zone"),
    ],
)
def test_check_cron_refuses_with_a_reason(expression: str, timezone: str, message: str) -> None:
    with pytest.raises(ProtocolError) as err:
        check_cron(expression, timezone)
    assert err.value.code == ErrorCode.INVALID_PARAMS
    assert message in err.value.message


def test_check_cron_accepts_standard_expressions() -> None:
    for expression in ("*/5 * * * *", "0 9 * * 1-5", "15,45 8-18 * * *", "0 0 1 jan,jul *", "0 12 * * sun"):
        check_cron(expression, "Europe/Paris")


# -- missed firings ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "missed"),
    [(ANCHOR + 299, 0), (ANCHOR + 300, 1), (ANCHOR + 599, 1), (ANCHOR + 600, 2), (ANCHOR + 1000, 3)],
)
def test_missed_between_counts_the_due_firing_and_those_after_it(now: float, missed: int) -> None:
    assert missed_between(every(300), ANCHOR + 300, now) == missed


def test_missed_between_for_cron() -> None:
    due = at("2027-01-15T12:05:00+00:00")
    assert missed_between(cron("*/5 * * * *"), due, due - 1) == 0
    assert missed_between(cron("*/5 * * * *"), due, due) == 1
    assert missed_between(cron("*/5 * * * *"), due, due + 3600) == 13  # 12:05 ... 13:05
    assert missed_between(cron("0 9 * * *", "Europe/Paris"), at("2027-03-27T08:00:00+00:00"),
                          at("2027-03-30T07:00:00+00:00")) == 4


def test_missed_between_stops_counting_at_the_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    assert missed_between(every(10), ANCHOR, ANCHOR + 10 * 366 * 86400) == MAX_MISSED_COUNTED
    monkeypatch.setattr(schedules, "MAX_MISSED_COUNTED", 50)  # counting cron firings one by one is slower
    assert missed_between(cron("* * * * *"), ANCHOR, ANCHOR + 86400) == 50


def test_missed_cron_firings_are_counted_with_one_iterator() -> None:
    every_minute = Timing(every=None, cron="* * * * *", timezone="UTC", anchor=0.0)
    due = 1_800_000_000.0 - 1_800_000_000.0 % 60
    assert missed_between(every_minute, due, due + 30 * 86_400) == 30 * 1440 + 1
