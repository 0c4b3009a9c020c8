"""Reconnect delays: exponential backoff with full jitter.

"Full jitter" from the AWS Architecture Blog, *Exponential Backoff And Jitter* (2015):
``sleep = random_between(0, min(cap, base * 2 ** attempt))``. Spreading reconnects over the
whole interval is what lets 10,000 agents come back after a daemon restart without
arriving in waves (DESIGN "Numbers we design for": a reconnect storm).

Pure: the random source is a parameter, so tests pin it.
"""

from __future__ import annotations

from collections.abc import Callable

DEFAULT_BASE = 0.2
DEFAULT_CAP = 30.0
_MAX_EXPONENT = 64
"""2**64 * any sane base is far above any cap; clamping keeps the float finite."""


def full_jitter(attempt: int, *, base: float, cap: float, rand: Callable[[], float]) -> float:
    """A delay uniformly drawn from ``[0, min(cap, base * 2**attempt)]``.

    ``attempt`` counts failures since the last successful session, from 0. ``rand`` returns
    a float in ``[0, 1]`` (``random.random``).
    """
    if attempt < 0:
        raise ValueError(f"attempt must be >= 0, got {attempt}")
    if base < 0 or cap < 0:
        raise ValueError(f"base and cap must be >= 0, got base={base} cap={cap}")
    ceiling = min(cap, base * 2.0 ** min(attempt, _MAX_EXPONENT))
    return rand() * ceiling


def reconnect_delay(
    attempt: int,
    *,
    base: float = DEFAULT_BASE,
    cap: float = DEFAULT_CAP,
    rand: Callable[[], float],
    retry_after: float | None = None,
) -> float:
    """How long to wait before reconnect number ``attempt + 1``.

    When the daemon shed load and said ``retry_after`` (error 4029), wait at least that
    long; the jitter is added on top so that every agent told "30 s" does not come back in
    the same millisecond.
    """
    delay = full_jitter(attempt, base=base, cap=cap, rand=rand)
    if retry_after is not None and retry_after > 0:
        delay += retry_after
    return delay
