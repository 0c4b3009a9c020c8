"""The garbage collector, tuned for tetherd's load.

A reconnect storm allocates millions of short-lived objects, and with CPython's default
thresholds the full collections it triggers stop the event loop: so everything alive after
start-up is frozen out of the collector's scans, and collections run less often
(:func:`tune`). But a closed connection leaves a reference cycle behind (websockets'
protocol object, its reader, the ``EOFError`` and the frames of its traceback) that only a
full collection frees, and with those thresholds one practically never runs:
:func:`collect_closed` runs a full collection once a minute when connections closed since
the last one; a quiet daemon collects nothing. (The measurements: docs/performance.md,
the soak and the reconnect storm.)
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from typing import Protocol

from .clock import Clock

log = logging.getLogger("tether.housekeeping")

COLLECT_EVERY = 60.0
"""Seconds between full collections, when connections closed meanwhile."""


class _Counts(Protocol):
    closed: int


def tune() -> None:
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 1000)


async def collect_closed(stats: _Counts, clock: Clock, every: float = COLLECT_EVERY) -> None:
    """Run until cancelled: a full collection every ``every`` seconds of the clock in which a
    connection closed. ``collected`` in the log is what it freed."""
    seen = stats.closed
    while True:
        tick = asyncio.Event()
        clock.call_at(clock.time() + every, tick.set)
        await tick.wait()
        if stats.closed == seen:
            continue
        seen = stats.closed
        started = time.perf_counter()
        freed = gc.collect()
        log.debug("event=gc_collected objects=%d ms=%.1f", freed, 1000 * (time.perf_counter() - started))
