"""The daemon's one clock: what time it is, and a call back at a time.

Everything in tetherd that reads the time or waits for one takes a :class:`Clock` (trio's
``MockClock`` idea), so its unit tests run on :class:`FakeClock` and never sleep. The
wall clock (Unix time) is what the store records and what ttls and schedules are reckoned
in; the monotonic one is what rates and limits are (it never jumps); callbacks run on the
event loop.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from typing import Protocol


class Handle(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    def time(self) -> float:
        """Seconds since the epoch (Unix time)."""
    def monotonic(self) -> float:
        """Seconds from an arbitrary start, never going back: for rates and limits."""
    def call_at(self, when: float, callback: Callable[[], None]) -> Handle:
        """Call ``callback`` on the event loop once :meth:`time` has reached ``when``."""


class SystemClock:
    """The real one: ``time.time`` and the running loop's timers."""

    __slots__ = ()

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def call_at(self, when: float, callback: Callable[[], None]) -> Handle:
        return asyncio.get_running_loop().call_later(max(0.0, when - time.time()), callback)


class FakeClock:
    """A clock that moves only when told to (:meth:`advance`), running what fell due."""

    def __init__(self, now: float) -> None:
        self.now = now
        self._due: list[tuple[float, int, _FakeHandle]] = []
        self._seq = itertools.count()

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], None]) -> Handle:
        handle = _FakeHandle(callback)
        heapq.heappush(self._due, (when, next(self._seq), handle))
        return handle

    def advance(self, seconds: float = 0.0) -> None:
        """Move the time on by ``seconds`` and run, in time order, every callback due by then
        (each one seeing the time it was due, as a loop running late would not)."""
        end = self.now + seconds
        while self._due and self._due[0][0] <= end:
            when, _, handle = heapq.heappop(self._due)
            self.now = max(self.now, when)
            if not handle.cancelled:
                handle.callback()
        self.now = end

    @property
    def pending(self) -> int:
        """Callbacks armed and not cancelled."""
        return sum(not h.cancelled for *_, h in self._due)


class _FakeHandle:
    __slots__ = ("callback", "cancelled")

    def __init__(self, callback: Callable[[], None]) -> None:
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True
