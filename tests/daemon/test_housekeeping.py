"""The full collection that frees what closed connections leave in reference cycles."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator

import pytest

from tether.daemon.housekeeping import collect_closed
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
    stats = Stats()
    cycle = weakref.ref(_Cycle())
    assert cycle() is not None  # only a collection frees it
    task = asyncio.create_task(collect_closed(stats, every=0.05))
    try:
        await asyncio.sleep(0.2)
        assert cycle() is not None, "a quiet daemon collects nothing"
        stats.closed += 1
        await asyncio.sleep(0.12)
        assert cycle() is None
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
