"""Polling sequences and recurring schedules: their rules and numbers, without I/O.

Polling follows Cortex XSOAR's "Scheduled Commands": a run may ask to be run again in
``next_run_in_seconds``, "however it will never be less than 10 seconds"; the sequence
ends when a run returns no schedule (done), when a run fails (error), or when its timeout
is reached, and then the daemon writes the timeout error entry itself. The floor is a
daemon setting (``min_interval``, default :data:`DEFAULT_MIN_INTERVAL`) so tests can
lower it; it bounds recurring schedules' periods too.
"""

from __future__ import annotations

import math
import re
from typing import NamedTuple

DEFAULT_MIN_INTERVAL = 10.0
"""XSOAR: the interval between runs "will never be less than 10 seconds"."""
DEFAULT_POLL_TIMEOUT = 600.0
"""XSOAR ``polling_function``'s default ``timeout``; also used for a ``ScheduledCommand``
that gives none."""
MAX_SECONDS = 366 * 86_400.0
"""Longest interval, timeout or schedule period accepted: beyond a year is a mistake."""


class InvalidSchedule(ValueError):
    """A run's schedule that cannot be honoured; the message says which value and why."""


class PollPlan(NamedTuple):
    """What the daemon does with a run's schedule."""

    interval: float
    """Seconds until the next run: the one asked for, raised to the floor if below it."""
    timeout: float
    """Seconds the whole sequence may poll, from its first schedule."""
    note: str
    """Said in the run's history entry when the interval was raised; else empty."""


def _seconds(name: str, value: float, *, allow_zero: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidSchedule(f"{name} must be a finite number of seconds, not {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise InvalidSchedule(f"{name} must be {'at least 0' if allow_zero else 'more than 0'} seconds, not {value:g}")
    if value > MAX_SECONDS:
        raise InvalidSchedule(f"{name} of {value:g} s is more than a year; give at most {MAX_SECONDS:g} s")
    return float(value)


def plan_next_run(next_run_in_seconds: float, timeout_in_seconds: float | None, floor: float) -> PollPlan:
    """Check a run's schedule against the rules above; raise :class:`InvalidSchedule`.

    Any interval below the floor, zero and negative ones included, is raised to it (XSOAR's
    ``ScheduledCommand`` raises anything below 10 s to 10 s); a timeout of ``None`` or 0 is
    "not given" (XSOAR: ``str(timeout_in_seconds) if timeout_in_seconds else None``)."""
    if isinstance(next_run_in_seconds, int | float) and not isinstance(next_run_in_seconds, bool) \
            and -MAX_SECONDS <= next_run_in_seconds < 0:
        return PollPlan(floor, plan_next_run(0, timeout_in_seconds, floor).timeout,
                        f"next run asked for in {next_run_in_seconds:g} s; raised to the {floor:g} s floor")
    asked = _seconds("next_run_in_seconds", next_run_in_seconds, allow_zero=True)
    timeout = DEFAULT_POLL_TIMEOUT if not timeout_in_seconds else \
        _seconds("timeout_in_seconds", timeout_in_seconds, allow_zero=False)
    if asked >= floor:
        return PollPlan(asked, timeout, "")
    return PollPlan(floor, timeout, f"next run asked for in {asked:g} s; raised to the {floor:g} s floor")


def timeout_error(timeout: float) -> str:
    """The error entry the daemon writes itself when a polling sequence times out (XSOAR)."""
    return f"polling timed out after {timeout:g} s"


def check_period(every: float, floor: float) -> float:
    """A recurring schedule's period in seconds; raise :class:`InvalidSchedule`."""
    period = _seconds("every", every, allow_zero=False)
    if period < floor:
        raise InvalidSchedule(
            f"every {fmt_duration(period)} is below the {fmt_duration(floor)} floor "
            "(tetherd's min_interval setting)")
    return period


_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0, "w": 604_800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


def parse_duration(text: str) -> float:
    """``"90"``, ``"30s"``, ``"5m"``, ``"1h30m"``, ``"2d"`` -> seconds; raise ValueError."""
    compact = text.strip().lower().replace(" ", "")
    if re.fullmatch(r"\d+(?:\.\d+)?", compact):
        return float(compact)
    parts = _PART.findall(compact)
    if not compact or "".join(n + u for n, u in parts) != compact:
        raise ValueError(f"invalid duration {text!r}: use e.g. 30s, 5m, 1h30m, 2d (or plain seconds)")
    return sum(float(n) * _UNITS[u] for n, u in parts)


def fmt_duration(seconds: float) -> str:
    """Seconds in the largest units that say them exactly: ``300`` -> ``5m``, ``90`` -> ``1m30s``."""
    if seconds != int(seconds) or seconds <= 0:
        return f"{seconds:g}s"
    rest = int(seconds)
    out = []
    for unit, size in (("w", 604_800), ("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            out.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(out)
