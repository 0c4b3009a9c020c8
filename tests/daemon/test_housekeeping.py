"""The full collection that frees what closed connections leave in reference cycles."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Callable, Iterator

import pytest

from tether.daemon.clock import FakeClock, Handle
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
    stats, clock = Stats(), FakeClock(0.0)
    cycle = weakref.ref(_Cycle())
    assert cycle() is not None  # only a collection frees it
    looked = asyncio.Event()
    real_call_at = clock.call_at

    def call_at(when: float, callback: Callable[[], None]) -> Handle:
        looked.set()  # the loop is waiting for its next minute
        return real_call_at(when, callback)

    clock.call_at = call_at  # type: ignore[method-assign]

    async def minute() -> None:
        """Let a minute pass and the loop look at it (and wait for the next)."""
        looked.clear()
        clock.advance(COLLECT_EVERY)
        async with asyncio.timeout(5):
            await looked.wait()

    task = asyncio.create_task(collect_closed(stats, clock))
    try:
        async with asyncio.timeout(5):
            await looked.wait()
        await minute()
        assert cycle() is not None, "a quiet daemon collects nothing"
        stats.closed += 1
        await minute()
        assert cycle() is None
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
