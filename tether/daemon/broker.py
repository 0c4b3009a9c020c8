"""The broker: which agents are online, what each must be pushed, and what ends when.

It ties the store (what is committed) to the open sessions (what is on the wire) and the
timer wheel (when a task's ttl ends, when a polling delivery's next run or timeout is
due, when a recurring schedule fires). It never writes SQL and never touches a socket
directly: sessions do the I/O, the store does the persistence.

Every wait is an entry on the one wheel, keyed by what it is about (:class:`Timer`): no
coroutine, task or thread waits per task, poll or schedule. When entries fall due, the
timer loop submits one store operation each and waits for their commits together.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import logging
import time
from collections.abc import Callable
from typing import Any

from ..protocol.codec import error_frame
from ..protocol.console import DeliveryEvent
from ..protocol.errors import ErrorCode, ProtocolError
from ..protocol.lifecycle import TERMINAL, DeliveryState, cancel_reason
from .schedules import next_fire
from .session import AgentSession, SentMarks
from .store import Change, Firing, Outcome, PollOutcome, PushItem, Store
from .wheel import TimerHandle, TimerWheel

log = logging.getLogger("tether.broker")

MAX_REFUSALS_TOLD = 100
"""Error frames sent back for one report: a peer's absurd list never turns into a flood."""


STORAGE_RETRY_AFTER = 2.0
"""Seconds a peer whose write the store refused (1503) is told to wait before trying again."""


class Stats:
    """Counters for /metrics."""

    __slots__ = ("_tasks", "closed", "credential_failures", "frames_in", "frames_out", "logins_throttled", "pushed",
                 "sessions_total", "shed", "throttled", "untold")

    def __init__(self) -> None:
        self.frames_in = 0
        self.frames_out = 0
        self.pushed = 0
        self.sessions_total: collections.Counter[str] = collections.Counter()
        self.shed: collections.Counter[str] = collections.Counter()
        """Connections shed, by reason: ``address`` (over its address's limit: told 4029, or
        closed unanswered far over it) or ``total`` (over the limit on all connections)."""
        self.closed = 0
        """WebSocket connections that ended (of any kind): what the full collections free."""
        self.throttled = 0
        """Times a session's reading was paused for its frame budget."""
        self.untold = 0
        """Error replies to bad frames not sent because the peer was not reading them."""
        self.credential_failures: collections.Counter[str] = collections.Counter()
        """Failed logins and enrollments, by what was presented: ``console_token`` (an admin
        token), ``agent_token``, ``enroll_key``."""
        self.logins_throttled = 0
        """Logins and enrollments refused unread because their address failed too often (4028)."""
        self._tasks: tuple[float, int] | None = None

    def tasks_alive(self, max_age: float) -> int:
        """How many asyncio tasks of this loop are alive, counted at most every ``max_age``
        seconds (the count walks every task)."""
        now = time.monotonic()
        if self._tasks is None or now - self._tasks[0] >= max_age:
            self._tasks = (now, len(asyncio.all_tasks()))
        return self._tasks[1]


class Timer(enum.IntEnum):
    """What a wheel entry is about; its key is ``id << 2 | kind`` (one int: ~1 M entries fit)."""

    EXPIRE = 0
    """A task's ttl ends (id: the task)."""
    POLL = 1
    """A polling delivery's next run is due, or its sequence times out (id: the delivery)."""
    SCHEDULE = 2
    """A recurring schedule fires (id: the schedule)."""
    EXPIRE_ONE = 3
    """The ttl of a task for one agent (id: the task): cleared as soon as its one delivery
    ends, so a finished task holds no entry for the rest of its ttl (a week by default)."""


RETRY_AFTER_STORE_ERROR = 1.0
"""Seconds before a timer whose store operation failed (disk full, locked) is tried again."""


class Broker:
    def __init__(self, store: Store, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self.stats = Stats()
        self.sessions: dict[str, AgentSession] = {}
        self.sent_marks = SentMarks()
        """Every session's due ``sent`` marks, on one timer."""
        self.consoles = 0
        self.identity_changes = 0
        """Counts the agent revocations, removals and merges this process committed, each
        counted in the same step as the sessions using the old credentials are ended: an
        agent login that sees it change while it read the token reads it again."""
        self._watchers: dict[int, set[Callable[[Change], None]]] = {}
        self.wheel: TimerWheel[int] = TimerWheel(clock())
        self._timers: dict[int, TimerHandle[int]] = {}
        """One pending wheel entry per key; setting a key again replaces its entry."""
        self._wheel_changed = asyncio.Event()
        self._selecting: dict[int, float] = {}
        """Active selector tasks and when their ttl ends: while there is one, an agent's
        hello is checked against them (an empty dict costs the connect path nothing)."""

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

    def apply(self, changes: list[Change], *, withdraw: bool = False) -> None:
        """React to committed state changes: watchers, and for the daemon's own decisions
        (``withdraw``: untask, ttl, polling timeout) the sessions holding those runs."""
        for change in changes:
            if change.new in TERMINAL:
                self.clear_timer(Timer.POLL, change.delivery_id)
                self.clear_timer(Timer.EXPIRE_ONE, change.task_id)  # if it was a one-agent task
                # A waiting delivery is on no agent (its run's result is in): nothing to stop.
                if withdraw and change.old != DeliveryState.WAITING:
                    session = self.sessions.get(change.agent_id)
                    if session is not None:
                        session.cancel(change.delivery_id, cancel_reason(change.new))
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
            session.send_control(error_frame(ProtocolError(ErrorCode.STORAGE_UNAVAILABLE, str(exc)),
                                             retry_after=STORAGE_RETRY_AFTER))
            return
        outcome = fut.result()
        for refusal in outcome.refused[:MAX_REFUSALS_TOLD]:
            session.send_control(error_frame(ProtocolError(ErrorCode(refusal.code), refusal.message,
                                                           ref=refusal.delivery_id)))
        if len(outcome.refused) > MAX_REFUSALS_TOLD:
            log.warning("event=refusals_truncated agent_id=%s refused=%d told=%d",
                        session.agent_id, len(outcome.refused), MAX_REFUSALS_TOLD)
        self.apply(outcome.changes)
        for delivery_id, when in outcome.timers:
            self.set_timer(Timer.POLL, delivery_id, when)
        for task_id, expires_at in outcome.expiries:  # sequels: tasks of one agent
            self.schedule_expiry(task_id, expires_at, one_agent=True)

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

    # -- the timer wheel ------------------------------------------------------------------

    def set_timer(self, kind: Timer, ident: int, when: float) -> None:
        key = ident << 2 | kind
        old = self._timers.get(key)
        if old is not None:
            self.wheel.cancel(old)
        self._timers[key] = self.wheel.schedule(when, key)
        self._wheel_changed.set()

    def clear_timer(self, kind: Timer, ident: int) -> None:
        handle = self._timers.pop(ident << 2 | kind, None)
        if handle is not None:
            self.wheel.cancel(handle)

    def schedule_expiry(self, task_id: int, expires_at: float, *, one_agent: bool = False) -> None:
        """Put a task's ttl on the wheel. A task for one agent (``one_agent``) is done with
        once its delivery ends; a tag or ``all`` task keeps reaching agents until its ttl."""
        self.set_timer(Timer.EXPIRE_ONE if one_agent else Timer.EXPIRE, task_id, expires_at)

    async def load_timers(self) -> list[tuple[str, int]]:
        """Rebuild the wheel from the store (at start). Schedules whose firings fell due
        while tetherd was down are settled first (skipped, or left due to fire once);
        returns (name, missed firings) of each."""
        missed = await self.store.skip_missed(self.clock(), next_fire)
        timers = await self.store.timers()
        for task_id, expires_at, one_agent in timers.expiries:
            self.schedule_expiry(task_id, expires_at, one_agent=bool(one_agent))
        for delivery_id, when in timers.polls:
            self.set_timer(Timer.POLL, delivery_id, when)
        for schedule_id, when in timers.schedules:
            self.set_timer(Timer.SCHEDULE, schedule_id, when)
        for task_id, expires_at in timers.selecting:
            self.selecting(task_id, expires_at)
        return missed

    async def run_timers(self) -> None:
        """Drive the wheel from the clock until cancelled: expire tasks, run polls' next runs
        (or time them out), fire schedules."""
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
            pending = [self._fire(key, now) for key in self.wheel.advance(now)]
            if pending:
                await asyncio.wait(pending)  # futures, not tasks: one store operation per entry

    def _fire(self, key: int, now: float) -> asyncio.Future[Any]:
        self._timers.pop(key, None)
        kind, ident = Timer(key & 3), key >> 2
        fut: asyncio.Future[Any]
        if kind in (Timer.EXPIRE, Timer.EXPIRE_ONE):
            fut = self.store.expire_task(ident, now)
        elif kind is Timer.POLL:
            fut = self.store.poll_due(ident, now)
        else:
            fut = self.store.fire_schedule(ident, now, next_fire)
        fut.add_done_callback(lambda f: self._fired(kind, ident, f))
        return fut

    def _fired(self, kind: Timer, ident: int, fut: asyncio.Future[Any]) -> None:
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is not None:  # the store refused (disk full, locked): try again shortly
            log.error("event=timer_failed kind=%s id=%d error=%r", kind.name.lower(), ident, exc)
            self.set_timer(kind, ident, self.clock() + RETRY_AFTER_STORE_ERROR)
            return
        result = fut.result()
        if kind in (Timer.EXPIRE, Timer.EXPIRE_ONE):
            changes: list[Change] = result
            if changes:
                log.info("event=task_expired task_id=%d deliveries=%d", ident, len(changes))
            self.apply(changes, withdraw=True)
        elif kind is Timer.POLL:
            assert isinstance(result, PollOutcome)
            self.apply(result.changes, withdraw=True)
            self.offer(result.items)
            if result.timer is not None:
                self.set_timer(Timer.POLL, ident, result.timer)
        else:
            assert isinstance(result, Firing)
            if result.task_id is not None:
                log.info("event=schedule_fired schedule_id=%d task_id=%d deliveries=%d",
                         ident, result.task_id, len(result.items))
                self.schedule_expiry(result.task_id, result.expires_at)
                self.offer(result.items)
            if result.next_fire_at is not None:
                self.set_timer(Timer.SCHEDULE, ident, result.next_fire_at)

    # -- selector tasks (LimaCharlie) ----------------------------------------------------

    def selecting(self, task_id: int, expires_at: float) -> None:
        """A selector task is active until ``expires_at`` (or until it is cancelled: the
        store then finds it inactive, and this entry lapses at its ttl)."""
        self._selecting[task_id] = expires_at

    def selecting_only(self, active: list[tuple[int, float]]) -> None:
        """After an untask: only these selector tasks are still active (a cancelled one no
        longer costs each agent's hello a store operation until its ttl)."""
        self._selecting = dict(active)

    def selector_tasks_active(self) -> bool:
        """Whether an agent's new facts must be checked against selector tasks."""
        if not self._selecting:
            return False
        now = self.clock()
        for task_id in [t for t, end in self._selecting.items() if end <= now]:
            del self._selecting[task_id]
        return bool(self._selecting)

    def agent_facts(self, agent_id: str, hostname: str, platform: str) -> None:
        """An agent said its facts (hello): if selector tasks are active, queue the ones it now
        matches. One dict check otherwise (a reconnect storm of 10,000 agents pays that only)."""
        if not self.selector_tasks_active():
            return
        fut = self.store.select_for_agent(agent_id, hostname, platform, self.clock())
        fut.add_done_callback(self._selected)

    def _selected(self, fut: asyncio.Future[list[PushItem]]) -> None:
        if fut.cancelled():
            return
        if fut.exception() is not None:
            log.warning("event=select_failed error=%r", fut.exception())
            return
        self.offer(fut.result())

    # -- facts for consoles ---------------------------------------------------------------

    def online(self, agent_id: str) -> bool:
        return agent_id in self.sessions

    def delivery_event(self, change: Change) -> DeliveryEvent:
        return DeliveryEvent(
            delivery_id=change.delivery_id, agent_id=change.agent_id, state=change.new,
            previous=change.old, terminal=change.new in TERMINAL, updated_at=self.clock(),
        )
