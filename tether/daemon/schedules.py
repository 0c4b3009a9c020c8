"""When recurring schedules fire: ``every`` periods and cron expressions, as pure functions.

A schedule fires at ``anchor + k * every`` (the anchor is when it was added, so firings
stay on their grid however late one ran), or at the times of a five-field cron
expression read in the schedule's time zone (parsed by croniter, not by hand). Each
firing creates an ordinary task; the daemon keeps one timer-wheel entry per schedule.
:data:`CALENDAR` hands these functions to the store (which keeps no calendar of its own).
"""

from __future__ import annotations

import math
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadCronError, CroniterBadDateError, croniter

from ..protocol.errors import ErrorCode, ProtocolError
from .store import Timing

MAX_MISSED_COUNTED = 100_000
"""Firings counted one by one when tetherd was down a long time; beyond, the count stops."""


def _bad(message: str) -> ProtocolError:
    return ProtocolError(ErrorCode.INVALID_PARAMS, message)


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise _bad(f"unknown time zone {name!r} (use an IANA name such as UTC or Europe/Paris)") from None


def check_cron(expression: str, timezone: str) -> None:
    """Refuse what croniter cannot read, and anything but the five standard fields."""
    fields = expression.split()
    if len(fields) != 5:
        raise _bad(f"invalid cron expression {expression!r}: give five fields "
                   "(minute hour day-of-month month day-of-week), e.g. '*/5 * * * *'")
    zone(timezone)
    try:
        croniter(expression)
    except (CroniterBadCronError, ValueError, KeyError) as exc:
        raise _bad(f"invalid cron expression {expression!r}: {exc}") from None


def next_fire(timing: Timing, after: float) -> float:
    """The first firing strictly after ``after`` (a Unix time)."""
    if timing.every is not None:
        k = math.floor((after - timing.anchor) / timing.every) + 1
        when = timing.anchor + max(k, 1) * timing.every
        while when <= after:  # float rounding at the boundary
            when += timing.every
        return when
    assert timing.cron is not None
    start = datetime.fromtimestamp(after, zone(timing.timezone))
    try:
        when = float(croniter(timing.cron, start).get_next(float))
    except CroniterBadDateError:  # e.g. "0 0 31 2 *": no such date, ever
        return math.inf
    return when


def missed_between(timing: Timing, due: float, now: float) -> int:
    """Firings at or after ``due`` and at or before ``now`` (``due`` itself is one)."""
    if due > now:
        return 0
    if timing.every is not None:
        return min(MAX_MISSED_COUNTED, math.floor((now - due) / timing.every) + 1)
    assert timing.cron is not None
    times = croniter(timing.cron, datetime.fromtimestamp(due, zone(timing.timezone)))  # one iterator for all
    count, when = 0, due
    while when <= now and count < MAX_MISSED_COUNTED:
        count += 1
        try:
            when = float(times.get_next(float))
        except CroniterBadDateError:
            break
    return count


class _Calendar:
    """This module as the store's :class:`~.store.Calendar`."""

    __slots__ = ()

    def next_fire(self, timing: Timing, after: float) -> float:
        return next_fire(timing, after)

    def missed_between(self, timing: Timing, due: float, now: float) -> int:
        return missed_between(timing, due, now)


CALENDAR = _Calendar()
