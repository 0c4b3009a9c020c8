"""A fake clock for the daemon's unit tests that says when something waits on it, so a test
waits for that (never for time) and then moves the clock on."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from tether.daemon.clock import FakeClock, Handle

WAIT = 5.0
"""Seconds a test waits for the code under test to arm the clock before it fails."""


class ArmingClock(FakeClock):
    """A :class:`FakeClock` that records each callback armed on it and sets :attr:`armed`."""

    def __init__(self, now: float) -> None:
        super().__init__(now)
        self.armed = asyncio.Event()
        self.arms: list[float] = []
        """When each callback armed was due, in order."""

    def call_at(self, when: float, callback: Callable[[], None]) -> Handle:
        self.arms.append(when)
        self.armed.set()
        return super().call_at(when, callback)

    async def waiting(self) -> None:
        """Until a callback is armed (the code under test waits on the clock); then clear."""
        async with asyncio.timeout(WAIT):
            await self.armed.wait()
        self.armed.clear()
