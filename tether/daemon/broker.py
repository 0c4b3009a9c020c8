"""The broker: which agents are online, what each must be pushed, and what ends when.

It ties the store (what is committed) to the open sessions (what is on the wire) and the
timer wheel (when a task's ttl ends). It never writes SQL and never touches a socket
directly: sessions do the I/O, the store does the persistence.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable

from ..protocol.codec import error_frame
from ..protocol.console import DeliveryEvent
from ..protocol.errors import ErrorCode, ProtocolError
from ..protocol.states import TERMINAL
from .session import AgentSession
from .store import Change, Outcome, PushItem, Store
from .wheel import TimerHandle, TimerWheel

log = logging.getLogger("tether.broker")

MAX_REFUSALS_TOLD = 100
"""Error frames sent back for one report: a peer's absurd list never turns into a flood."""


class Stats:
    """Counters for /metrics."""

    __slots__ = ("frames_in", "frames_out", "pushed", "sessions_total")

    def __init__(self) -> None:
        self.frames_in = 0
        self.frames_out = 0
        self.pushed = 0
        self.sessions_total: collections.Counter[str] = collections.Counter()


class Broker:
    def __init__(self, store: Store, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self.stats = Stats()
        self.sessions: dict[str, AgentSession] = {}
        self.consoles = 0
        self._watchers: dict[int, set[Callable[[Change], None]]] = {}
        self.wheel: TimerWheel[int] = TimerWheel(clock())
        self._expiry: dict[int, TimerHandle[int]] = {}
        self._wheel_changed = asyncio.Event()

    # -- sessions -------------------------------------------------------------------------

    def register(self, session: AgentSession) -> AgentSession | None:
        """Make ``session`` the agent's session; return the one it replaces, if any."""
        old = self.sessions.get(session.agent_id)
        self.sessions[session.agent_id] = session
        return old

    def unregister(self, session: AgentSession) -> None:
        if self.sessions.get(session.agent_id) is session:
            del self.sessions[session.agent_id]

    def offer(self, items: list[PushItem]) -> None:
        """Hand committed deliveries to the sessions of agents that are online."""
        by_agent: dict[str, list[PushItem]] = collections.defaultdict(list)
        for item in items:
            if item.agent_id in self.sessions:
                by_agent[item.agent_id].append(item)
        for agent_id, batch in by_agent.items():
            self.sessions[agent_id].offer(batch)

    # -- state changes --------------------------------------------------------------------

    def apply(self, changes: list[Change]) -> None:
        """React to committed state changes: cancel frames, withdrawals, watchers."""
        for change in changes:
            if change.new in ("cancelled", "expired"):
                session = self.sessions.get(change.agent_id)
                if session is not None:
                    session.cancel(change.delivery_id, change.new)
            watchers = self._watchers.get(change.task_id)
            if watchers:
                for notify in list(watchers):
                    notify(change)

    def on_outcome(self, session: AgentSession, fut: asyncio.Future[Outcome]) -> None:
        """Store callback for an agent's ack / progress / results batch."""
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is not None:
            log.warning("event=report_failed agent_id=%s error=%r", session.agent_id, exc)
            session.send_control(error_frame(ProtocolError(ErrorCode.STORAGE_UNAVAILABLE, str(exc))))
            return
        outcome = fut.result()
        for refusal in outcome.refused[:MAX_REFUSALS_TOLD]:
            session.send_control(error_frame(ProtocolError(ErrorCode(refusal.code), refusal.message,
                                                           ref=refusal.delivery_id)))
        if len(outcome.refused) > MAX_REFUSALS_TOLD:
            log.warning("event=refusals_truncated agent_id=%s refused=%d told=%d",
                        session.agent_id, len(outcome.refused), MAX_REFUSALS_TOLD)
        self.apply(outcome.changes)

    def on_results(self, session: AgentSession, fut: asyncio.Future[Outcome]) -> None:
        if not fut.cancelled() and fut.exception() is None:
            session.settled(fut.result().settled)
        self.on_outcome(session, fut)

    def watch(self, task_id: int, notify: Callable[[Change], None]) -> Callable[[], None]:
        """Call ``notify`` for every committed change of the task's deliveries; returns unwatch."""
        self._watchers.setdefault(task_id, set()).add(notify)

        def unwatch() -> None:
            watchers = self._watchers.get(task_id)
            if watchers is not None:
                watchers.discard(notify)
                if not watchers:
                    del self._watchers[task_id]

        return unwatch

    # -- ttl on the timer wheel -----------------------------------------------------------

    def schedule_expiry(self, task_id: int, expires_at: float) -> None:
        if task_id in self._expiry:
            return
        self._expiry[task_id] = self.wheel.schedule(expires_at, task_id)
        self._wheel_changed.set()

    async def load_timers(self) -> None:
        for task_id, expires_at in await self.store.active_expiries():
            self.schedule_expiry(task_id, expires_at)

    async def run_timers(self) -> None:
        """Drive the wheel from the clock; expire tasks as their ttl ends. Runs until cancelled."""
        while True:
            due = self.wheel.next_due()
            now = self.clock()
            if due is None or due > now:
                self._wheel_changed.clear()
                timeout = None if due is None else min(due - now, 60.0)
                try:
                    await asyncio.wait_for(self._wheel_changed.wait(), timeout)
                except TimeoutError:
                    pass
                continue
            for task_id in self.wheel.advance(now):
                self._expiry.pop(task_id, None)
                try:
                    changes = await self.store.expire_task(task_id, self.clock())
                except Exception as exc:  # the store refused: retry on the next tick
                    log.error("event=expire_failed task_id=%d error=%r", task_id, exc)
                    self._expiry[task_id] = self.wheel.schedule(self.clock() + 1.0, task_id)
                    continue
                if changes:
                    log.info("event=task_expired task_id=%d deliveries=%d", task_id, len(changes))
                self.apply(changes)

    # -- facts for consoles ---------------------------------------------------------------

    def online(self, agent_id: str) -> bool:
        return agent_id in self.sessions

    def delivery_event(self, change: Change) -> DeliveryEvent:
        return DeliveryEvent(
            delivery_id=change.delivery_id, agent_id=change.agent_id, state=change.new,
            previous=change.old, terminal=change.new in TERMINAL, updated_at=self.clock(),
        )
