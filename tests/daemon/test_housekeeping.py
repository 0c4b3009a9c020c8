"""The full collection that frees what closed connections leave in reference cycles."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator

import pytest

from tether.daemon.broker import Stats
from tether.daemon.housekeeping import collect_closed


class _Cycle:
    def __init__(self) -> None:
        self.me = self


@pytest.fixture
def no_automatic_gc() -> Iterator[None]:
    gc.disable()
    yield
    gc.enable()


async def _run_for(stats: Stats, seconds: float) -> None:
    task = asyncio.create_task(collect_closed(stats, every=0.05))
    await asyncio.sleep(seconds)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_closed_connection_gets_its_cycles_collected(no_automatic_gc: None) -> None:
    stats = Stats()
    cycle = weakref.ref(_Cycle())
    assert cycle() is not None  # only a collection frees it
    task = asyncio.create_task(collect_closed(stats, every=0.05))
    await asyncio.sleep(0.12)
    assert cycle() is not None, "nothing closed: nothing collected"
    stats.closed += 1
    await asyncio.sleep(0.12)
    assert cycle() is None
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_quiet_daemon_collects_nothing(no_automatic_gc: None) -> None:
    stats = Stats()
    cycle = weakref.ref(_Cycle())
    await _run_for(stats, 0.2)
    assert cycle() is not None
    gc.collect()
