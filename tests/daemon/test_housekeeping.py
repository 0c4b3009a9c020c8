"""The full collection that frees what closed connections leave in reference cycles."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator

import pytest
from clocks import ArmingClock

from tether.daemon.housekeeping import COLLECT_EVERY, collect_closed
from tether.daemon.metrics import Stats


class _Cycle:
    def __init__(self) -> None:
        self.me = self


@pytest.fixture
def no_automatic_gc() -> Iterator[None]:
    gc.disable()
    yield
    gc.enable()


async def test_only_a_minute_with_closed_connections_gets_a_full_collection(no_automatic_gc: None) -> None:
    stats, clock = Stats(), ArmingClock(0.0)
    cycle = weakref.ref(_Cycle())
    assert cycle() is not None  # only a collection frees it

    async def minute() -> None:
        """Let a minute pass and the loop look at it (and wait for the next)."""
        clock.advance(COLLECT_EVERY)
        await clock.waiting()

    task = asyncio.create_task(collect_closed(stats, clock))
    try:
        await clock.waiting()
        await minute()
        assert cycle() is not None, "a quiet daemon collects nothing"
        stats.closed += 1
        await minute()
        assert cycle() is None
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
