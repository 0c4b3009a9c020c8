"""The daemon's timers: one hierarchical wheel (``wheel.py``) of everything that ends or
falls due, driven from the clock.

Every wait is an entry on the one wheel, keyed by what it is about (:class:`~.effects.Timer`):
no coroutine, task or thread waits per task, poll or schedule. One entry per key: setting
a key again replaces its entry. When entries fall due, :meth:`Timers.run` hands each to the
operation that handles it (``Operations.fire``: one store write each) and waits for their
commits together before it looks at the wheel again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from .clock import Clock
from .effects import Timer
from .wheel import TimerHandle, TimerWheel

MAX_WAIT = 60.0
"""Seconds the loop sleeps at most before it looks at the clock again (a wall clock set
forward is noticed within this)."""

Fire = Callable[[Timer, int, float], "asyncio.Future[Any]"]
"""What handles a due entry (kind, id, now): a store write's future."""


class Timers:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.wheel: TimerWheel[int] = TimerWheel(clock.time())
        self._handles: dict[int, TimerHandle[int]] = {}
        """One pending wheel entry per key."""
        self._changed = asyncio.Event()

    def __len__(self) -> int:
        return len(self.wheel)

    def set(self, kind: Timer, ident: int, when: float) -> None:
        key = ident << 2 | kind
        old = self._handles.get(key)
        if old is not None:
            self.wheel.cancel(old)
        self._handles[key] = self.wheel.schedule(when, key)
        self._changed.set()

    def clear(self, kind: Timer, ident: int) -> None:
        handle = self._handles.pop(ident << 2 | kind, None)
        if handle is not None:
            self.wheel.cancel(handle)

    def pending(self, kind: Timer, ident: int) -> float | None:
        """When the entry of that key falls due, if there is one."""
        handle = self._handles.get(ident << 2 | kind)
        return None if handle is None else handle.when

    def due(self, now: float) -> list[tuple[Timer, int]]:
        """Take the entries due by ``now`` off the wheel."""
        due = self.wheel.advance(now)
        for key in due:
            self._handles.pop(key, None)
        return [(Timer(key & 3), key >> 2) for key in due]

    async def run(self, fire: Fire) -> None:
        """Drive the wheel from the clock until cancelled: hand what falls due to ``fire``."""
        while True:
            due = self.wheel.next_due()
            now = self.clock.time()
            if due is None or due > now:
                self._changed.clear()
                wake = None if due is None else self.clock.call_at(min(due, now + MAX_WAIT), self._changed.set)
                try:
                    await self._changed.wait()
                finally:
                    if wake is not None:
                        wake.cancel()
                continue
            pending = [fire(kind, ident, now) for kind, ident in self.due(now)]
            if pending:
                await asyncio.wait(pending)  # futures, not tasks: one store operation per entry
