"""Operations: the one place where something happens to tetherd's state, and where what it
means for the rest of the daemon is applied.

Each operation is one store write (a task created, an untask, a tag, an enrollment, a
revocation, a schedule fired, a ttl ended, a polling timer, an agent's reports); the write
answers one :class:`~.effects.Effects`, and :meth:`Operations.apply` applies it, in one
order, after the commit: what the reporting agent is told, consoles watching the task, the
timer wheel, cancels to agents holding a run the daemon ended, selector tasks, and last the
deliveries to push. Nothing else forwards a store result.

:attr:`Operations.after` is the observer point: callables given a :class:`Happened` once
an operation's effects are applied (where after-hooks attach, issue 20). An observer runs
on the event loop, must be quick and must not raise (one that does is logged and the
operation stands). :attr:`Operations.gate` is awaited where an operation that a
before-hook may veto starts (``task.create``, ``agent.enroll``), before anything is written.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from ..protocol.agent_config import ConfigError, check_settings
from ..protocol.alerts import DEFAULT_CHECKSUM, AlertView, alert_problem, checksum
from ..protocol.codec import error_frame
from ..protocol.console import ConfigLayerView, KeyView, ScheduleView, TokenView
from ..protocol.errors import ErrorCode, ProtocolError
from ..protocol.frames import Alert, Alerted, StateReport
from ..protocol.lifecycle import TERMINAL
from .alerts import AlertLimits
from .clock import Clock
from .effects import Effects, PushItem, Ref, Timer
from .metrics import Stats
from .push import Push
from .schedules import CALENDAR
from .session import AgentSession
from .state_reports import StateLimits
from .store import (
    AlertIn,
    AlertRecorded,
    ConfigTarget,
    Enrollment,
    NewSchedule,
    NewTask,
    ResultIn,
    StateRecorded,
    Store,
    Untasked,
)
from .store.hook_records import HookRecord
from .store.views import configure
from .timers import Timers
from .watchers import SelectorTasks, Watchers

log = logging.getLogger("tether.operations")

T = TypeVar("T")

MAX_REFUSALS_TOLD = 100
"""Error frames sent back for one report: a peer's absurd list never turns into a flood."""

STORAGE_RETRY_AFTER = 2.0
"""Seconds a peer whose write the store refused (1503) is told to wait before trying again."""

DEFAULT_ALERTS_PER_MINUTE = 60.0
DEFAULT_ALERT_BURST = 120
"""The alert limits when tetherd's configuration names none (:mod:`.alerts`)."""

RETRY_AFTER_STORE_ERROR = 1.0
"""Seconds before a timer whose store operation failed (disk full, locked) is tried again."""


@dataclass(frozen=True, slots=True)
class Happened:
    """One operation, committed and applied: what :attr:`Operations.after` observers get."""

    operation: str
    """Its name: ``task.create``, ``task.cancel``, ``agent.results``, ``timer.poll`` ..."""
    subject: Any
    """What it was about: the new task, the agent, the schedule's name, the timer's id ..."""
    effects: Effects[Any]


Observer = Callable[[Happened], "Awaitable[Any] | None"]
"""Told each operation once it is committed and applied. What it returns, if anything, is what
it wrote because of the operation (after-hook runs queued in the outbox): an operation that is
answered (a console's ``task.create``, an agent's enrollment) answers only once that is
committed too, so whoever saw the answer can count on it surviving a crash."""

Gate = Callable[[str, Any], Awaitable[None]]
"""Awaited with (operation, subject) before the operation writes; raises ProtocolError to refuse it."""

ACTOR: contextvars.ContextVar[str] = contextvars.ContextVar("actor", default="tetherd")
"""Who is doing what the running code does (``admin token 3 (operator)``): set by a console
session for its requests, read by hooks for their payloads' ``who``."""


_NOTHING: Effects[None] = Effects(None)
"""The effects of what changes nothing in the store (an agent online or offline)."""


class Consoles(Protocol):
    """The open console sessions, which a revoked admin token ends."""

    def close(self, token_id: int, reason: str) -> int:
        """End the sessions logged in with the token; how many."""


class _NoConsoles:
    def close(self, token_id: int, reason: str) -> int:
        return 0


def _quiet(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        log.warning("event=write_failed error=%r", fut.exception())


class Operations:
    """Every write of the daemon, and the one place its effects are applied. Owns what they
    are applied to: the online agents' sessions (:attr:`push`), the timer wheel
    (:attr:`timers`), task watchers and selector tasks."""

    def __init__(self, store: Store, clock: Clock, *, stats: Stats | None = None) -> None:
        self.store = store
        self.clock = clock
        self.stats = stats if stats is not None else Stats()
        self.push = Push(clock, self.stats, self.mark_sent)
        self.timers = Timers(clock)
        self.watchers = Watchers()
        self.selectors = SelectorTasks(clock)
        self.consoles: Consoles = _NoConsoles()
        """Set by the console sessions: a revoked admin token ends the sessions using it."""
        self.after: list[Observer] = []
        """Observers of every operation, called in order after its effects are applied."""
        self.alert_limits = AlertLimits(DEFAULT_ALERTS_PER_MINUTE, DEFAULT_ALERT_BURST)
        """How many alerts each agent may have stored (config ``alerts_per_minute``, ``alert_burst``)."""
        self.alert_fields: tuple[str, ...] = DEFAULT_CHECKSUM
        """What makes two alerts one (config ``alert_checksum``)."""
        self.gate: Gate | None = None
        """Before-hooks (:mod:`.hooks`): may refuse a task or an enrollment before it is written."""
        self.hooks: Any = None
        """The automation hooks (:class:`.hooks.Hooks`) when tetherd runs them: ``hook.test`` fires one."""
        self.state_limits = StateLimits()
        """How often each agent's state reports are stored (:mod:`.state_reports`)."""

    def configure_alerts(self, fields: tuple[str, ...], per_minute: float, burst: int) -> None:
        """tetherd's alert settings: the checksum's fields, each agent's rate limit."""
        self.alert_fields = tuple(fields)
        self.alert_limits = AlertLimits(per_minute, burst)

    # -- the one place effects are applied -------------------------------------------------

    def apply(self, effects: Effects[Any]) -> None:
        """Apply a committed write's effects (see the module docstring for the order)."""
        changes = effects.changes
        if changes:
            timers = self.timers
            for change in changes:
                if change.new in TERMINAL:  # implied: an ended delivery waits for nothing
                    timers.clear(Timer.POLL, change.delivery_id)
                    timers.clear(Timer.EXPIRE_ONE, change.task_id)  # if it was a one-agent task
            self.watchers.notify(changes)
        if effects.progressed:
            self.watchers.progressed(effects.progressed)
        # Each list is looked at before it is walked: most are empty (this runs for every
        # report an agent sends).
        if effects.withdraws:
            for agent_id, delivery_id, reason in effects.withdraws:
                self.push.withdraw(agent_id, delivery_id, reason)
        if effects.cleared:
            for kind, ident in effects.cleared:
                self.timers.clear(kind, ident)
        if effects.timers:
            for kind, ident, when in effects.timers:
                self.timers.set(kind, ident, when)
        if effects.selecting or effects.unselected:
            for task_id, expires_at in effects.selecting:
                self.selectors.add(task_id, expires_at)
            for task_id in effects.unselected:
                self.selectors.discard(task_id)
        if effects.configures:
            for agent_id, frame in effects.configures:
                self.push.configure(agent_id, frame)
        if effects.items:
            items = effects.items
            if items[0].not_before or items[-1].not_before or any(i.not_before for i in items):
                items = self._hold(items)
            self.push.offer(items)

    def _hold(self, items: list[PushItem]) -> list[PushItem]:
        """Deliveries born ``delayed`` wait on the wheel for their time (or their ttl), on no
        agent; the others are pushed."""
        ready = []
        for item in items:
            if item.not_before:
                self.timers.set(Timer.POLL, item.delivery_id, min(item.not_before, item.expires_at))
            else:
                ready.append(item)
        return ready

    def _done(self, operation: str, subject: Any, effects: Effects[T]) -> Effects[T]:
        """Apply a committed write's effects and tell the observers."""
        self.apply(effects)
        if self.after:
            self._observe(Happened(operation, subject, effects))
        return effects

    async def _answered(self, operation: str, subject: Any, effects: Effects[T]) -> Effects[T]:
        """:meth:`_done` for an operation whose peer is answered: returns once what the
        observers wrote because of it is committed as well (a failure there is theirs to log:
        the operation stands)."""
        self.apply(effects)
        if self.after:
            writes = self._observe(Happened(operation, subject, effects))
            if writes:
                await asyncio.gather(*writes, return_exceptions=True)
        return effects

    def _observe(self, happened: Happened) -> list[Awaitable[Any]]:
        writes: list[Awaitable[Any]] = []
        for observer in list(self.after):
            try:
                wrote = observer(happened)
            except Exception:
                log.exception("event=observer_failed operation=%s", happened.operation)
                continue
            if wrote is not None:
                writes.append(wrote)
        return writes

    # -- tasks -----------------------------------------------------------------------------

    async def create_task(self, task: NewTask) -> Effects[int]:
        """A task, to the agents its target names now (and later ones, for a tag, a
        selector or all agents, until its ttl); unless a before-hook refuses it."""
        if self.gate is not None:
            await self.gate("task.create", task)
        effects = await self._answered("task.create", task, await self.store.create_task(task, self.clock.time()))
        target = f"selector:{task.selector!r}" if task.selector is not None else \
            "all" if task.target_kind == "all" else f"{task.target_kind}:{task.target}"
        log.info("event=task_created task_id=%d command=%s target=%s deliveries=%d", effects.result, task.command,
                 target, len(effects.items))
        return effects

    async def untask(self, *, task_id: int | None = None, agent_id: str | None = None, tag: str | None = None,
                     selector: str | None = None) -> Effects[Untasked]:
        """Cancel what the arguments name (``Store.cancel``); agents holding a run get a ``cancel``."""
        effects = await self.store.cancel(task_id=task_id, agent_id=agent_id, tag=tag, selector=selector,
                                          now=self.clock.time())
        self._done("task.cancel", {"task_id": task_id, "agent_id": agent_id, "tag": tag, "selector": selector},
                   effects)
        log.info("event=untask task_id=%s agent_id=%s tag=%s selector=%r cancelled=%d tasks_closed=%d", task_id,
                 agent_id, tag, selector, effects.result.cancelled, effects.result.tasks)
        return effects

    async def tag_add(self, agent_id: str, tag: str) -> Effects[None]:
        return self._done("tag.add", (agent_id, tag), await self.store.tag_add(agent_id, tag, self.clock.time()))

    async def tag_rm(self, agent_id: str, tag: str) -> Effects[None]:
        return self._done("tag.rm", (agent_id, tag), await self.store.tag_rm(agent_id, tag, self.clock.time()))

    # -- agents ----------------------------------------------------------------------------

    async def enroll(self, key: str, machine_uuid: str, hostname: str, platform: str, tags: list[str], *,
                     proof: tuple[str, str] | None = None, certificate: bytes | None = None) -> Enrollment:
        """``Store.enroll``; ``certificate``: the SHA-256 of the client certificate to bind it to.
        Unless a before-hook refuses it (ENROLL_VETOED)."""
        facts = {"hostname": hostname, "platform": platform, "machine_uuid": machine_uuid, "tags": tags,
                 "agent_id": proof[0] if proof else ""}
        if self.gate is not None:
            await self.gate("agent.enroll", facts)
        effects = await self.store.enroll(key, machine_uuid, hostname, platform, tags, self.clock.time(),
                                          proof=proof, certificate=certificate)
        enrolled = (await self._answered("agent.enroll", facts, effects)).result
        if enrolled.replaces:
            # The old identity's token is void: a session still open with it ends (4010).
            self.push.cut_off(enrolled.replaces, f"agent {enrolled.replaces} was replaced by agent "
                                                 f"{enrolled.agent_id} (enrolled again from another machine UUID)")
        log.info("event=agent_enrolled agent_id=%s status=%s clone_of=%s replaces=%s hostname=%s tags=%s",
                 enrolled.agent_id, enrolled.status, enrolled.clone_of or "-", enrolled.replaces or "-", hostname,
                 ",".join(enrolled.tags))
        return enrolled

    async def bind_certificate(self, agent_id: str, certificate: bytes) -> bool:
        """An agent bound to no client certificate yet is bound to this one (its SHA-256);
        False if it was bound already."""
        bound = self._done("agent.bind", agent_id, await self.store.bind_certificate(agent_id, certificate)).result
        if bound:
            log.info("event=agent_certificate_bound agent_id=%s sha256=%s", agent_id, certificate.hex())
        return bound

    def hello(self, agent_id: str, hostname: str, platform: str, commands: list[str], version: str) -> None:
        """An agent's session opened with these facts: recorded (fire and forget); if
        selector tasks are active, it gets those it now matches. One dict check otherwise
        (a reconnect storm of 10,000 agents pays that only)."""
        now = self.clock.time()
        self.store.agent_seen(agent_id, hostname, platform, commands, version, now)
        if self.selectors.active():
            self.store.select_for_agent(agent_id, hostname, platform, now).add_done_callback(self._selected)
        if self.after:
            self._observe(Happened("agent.online", {"agent_id": agent_id, "hostname": hostname, "platform": platform,
                                                    "version": version}, _NOTHING))

    def goodbye(self, agent_id: str) -> None:
        """An agent's session ended and no newer one replaced it: it is offline."""
        if self.after:
            self._observe(Happened("agent.offline", {"agent_id": agent_id}, _NOTHING))

    def _selected(self, fut: asyncio.Future[Effects[None]]) -> None:
        if fut.cancelled():
            return
        if fut.exception() is not None:
            log.warning("event=select_failed error=%r", fut.exception())
            return
        self._done("agent.select", None, fut.result())

    async def revoke_agent(self, agent_id: str) -> tuple[bool, int]:
        """The agent's token stops working and its session ends: (revoked now, sessions ended)."""
        revoked = self._done("agent.revoke", agent_id, await self.store.revoke_agent(agent_id)).result
        closed = self.push.cut_off(agent_id, f"agent {agent_id}'s token was revoked")
        log.info("event=agent_revoked agent_id=%s sessions_closed=%d", agent_id, closed)
        return revoked, closed

    async def approve_agent(self, agent_id: str) -> None:
        self._done("agent.approve", agent_id, await self.store.approve_agent(agent_id))
        log.info("event=agent_approved agent_id=%s", agent_id)

    async def remove_agent(self, agent_id: str) -> tuple[int, int]:
        """Token void, unfinished deliveries cancelled (the cancels queued before its session
        ends), out of every target: (deliveries cancelled, sessions ended)."""
        effects = self._done("agent.rm", agent_id, await self.store.remove_agent(agent_id, self.clock.time()))
        closed = self.push.cut_off(agent_id, f"agent {agent_id} was removed")
        log.info("event=agent_removed agent_id=%s cancelled=%d sessions_closed=%d", agent_id, len(effects.changes),
                 closed)
        return len(effects.changes), closed

    async def merge_agent(self, clone_id: str) -> tuple[str, int, int]:
        """The possible clone takes over its original's identity: (the original's id,
        deliveries cancelled, sessions ended)."""
        effects = self._done("agent.merge", clone_id, await self.store.merge_agent(clone_id, self.clock.time()))
        into = effects.result
        closed = self.push.cut_off(into, f"agent {into}'s identity was taken over by {clone_id} (agent merge)")
        closed += self.push.cut_off(clone_id, f"merged into agent {into}: log in again", reconnect=True)
        log.info("event=agent_merged agent_id=%s into=%s cancelled=%d sessions_closed=%d", clone_id, into,
                 len(effects.changes), closed)
        return into, len(effects.changes), closed

    # -- credentials -----------------------------------------------------------------------

    async def create_token(self, role: str, label: str) -> TokenView:
        view = self._done("token.create", role, await self.store.create_token(role, label, self.clock.time())).result
        log.info("event=token_created token_id=%d role=%s label=%r", view.token_id, role, label)
        return view

    async def revoke_token(self, token_id: int) -> tuple[bool, int]:
        """The token stops working and the console sessions using it end: (revoked now, ended)."""
        revoked = self._done("token.revoke", token_id, await self.store.revoke_token(token_id, self.clock.time()))
        closed = self.consoles.close(token_id, f"admin token {token_id} was revoked")
        log.info("event=token_revoked token_id=%d sessions_closed=%d", token_id, closed)
        return revoked.result, closed

    async def create_key(self, tags: list[str], expires_in: float | None, uses: int | None, *,
                         allow_requested_tags: bool = False) -> KeyView:
        now = self.clock.time()
        expires_at = None if expires_in is None else now + expires_in
        view = self._done("key.create", tags, await self.store.create_key(
            tags, expires_at, uses, now, allow_requested_tags=allow_requested_tags)).result
        log.info("event=key_created key_id=%d tags=%s allow_requested_tags=%s", view.key_id, ",".join(view.tags),
                 allow_requested_tags)
        return view

    async def revoke_key(self, key_id: int) -> bool:
        revoked = self._done("key.revoke", key_id, await self.store.revoke_key(key_id, self.clock.time())).result
        log.info("event=key_revoked key_id=%d", key_id)
        return revoked

    # -- recurring schedules ---------------------------------------------------------------

    async def add_schedule(self, spec: NewSchedule, first: float) -> ScheduleView:
        view = self._done("schedule.add", spec, await self.store.add_schedule(spec, self.clock.time(), first)).result
        log.info("event=schedule_added name=%s every=%s cron=%r target=%s", spec.name, spec.every, spec.cron,
                 view.target)
        return view

    async def pause_schedule(self, name: str, paused: bool) -> ScheduleView:
        """Pause, or resume (its next firing after now: those missed while paused are not run)."""
        effects = await self.store.pause_schedule(name, paused, self.clock.time(), CALENDAR)
        view = self._done("schedule.pause" if paused else "schedule.resume", name, effects).result
        log.info("event=schedule_%s name=%s", "paused" if paused else "resumed", name)
        return view

    async def remove_schedule(self, name: str) -> None:
        self._done("schedule.rm", name, await self.store.remove_schedule(name))
        log.info("event=schedule_removed name=%s", name)

    # -- automation hooks (their runs are kept by :mod:`.hooks`) ----------------------------

    async def add_hook(self, hook: HookRecord) -> HookRecord:
        added = self._done("hook.add", hook.name, await self.store.add_hook(hook)).result
        log.info("event=hook_added name=%s trigger=%s action=%s enabled=%s", hook.name, hook.trigger, hook.action,
                 hook.enabled)
        return added

    async def set_hook_enabled(self, name: str, enabled: bool) -> HookRecord:
        hook = self._done("hook.enable" if enabled else "hook.disable", name,
                          await self.store.set_hook_enabled(name, enabled)).result
        log.info("event=hook_%s name=%s", "enabled" if enabled else "disabled", name)
        return hook

    async def remove_hook(self, name: str) -> int:
        """The hook, its queued runs (how many: the result) and its run records."""
        dropped = self._done("hook.rm", name, await self.store.remove_hook(name)).result
        log.info("event=hook_removed name=%s pending_dropped=%d", name, dropped)
        return dropped

    # -- timers ----------------------------------------------------------------------------

    async def load(self) -> list[tuple[str, int]]:
        """At start: settle the schedules whose firings fell due while tetherd was down
        (skipped, or left due to fire once), then rebuild the wheel from the store. Returns
        (name, missed firings) of each such schedule."""
        missed = self._done("schedule.missed", None, await self.store.skip_missed(self.clock.time(), CALENDAR))
        self.apply(await self.store.timers())
        return missed.result

    def fire(self, kind: Timer, ident: int, now: float) -> asyncio.Future[Any]:
        """A wheel entry fell due: its store write (the ttl ended, a polling run is due or
        its sequence timed out, a schedule fires), applied on commit."""
        fut: asyncio.Future[Effects[Any]]
        if kind in (Timer.EXPIRE, Timer.EXPIRE_ONE):
            fut = self.store.expire_task(ident, now)
        elif kind is Timer.POLL:
            fut = self.store.poll_due(ident, now)
        else:
            fut = self.store.fire_schedule(ident, now, CALENDAR)
        fut.add_done_callback(lambda f: self._fired(kind, ident, f))
        return fut

    def _fired(self, kind: Timer, ident: int, fut: asyncio.Future[Effects[Any]]) -> None:
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is not None:  # the store refused (disk full, locked): try again shortly
            log.error("event=timer_failed kind=%s id=%d error=%r", kind.name.lower(), ident, exc)
            self.timers.set(kind, ident, self.clock.time() + RETRY_AFTER_STORE_ERROR)
            return
        effects = fut.result()
        self._done(f"timer.{kind.name.lower()}", ident, effects)
        if kind in (Timer.EXPIRE, Timer.EXPIRE_ONE) and effects.changes:
            log.info("event=task_expired task_id=%d deliveries=%d", ident, len(effects.changes))
        elif kind is Timer.SCHEDULE and effects.result is not None:
            log.info("event=schedule_fired schedule_id=%d task_id=%d deliveries=%d", ident, effects.result,
                     len(effects.items))

    def mark_sent(self, delivery_ids: list[int], pushed_at: float) -> None:
        """Pushes left unacknowledged are written as ``sent`` (fire and forget: nothing to apply)."""
        self.store.mark_sent(delivery_ids, pushed_at)

    # -- what agents report (at frame rate: futures and callbacks, no task each) ----------

    def acknowledge(self, session: AgentSession, refs: list[Ref], sent_at: dict[int, float], now: float) -> None:
        fut = self.store.acknowledge(session.agent_id, refs, now, sent_at)
        fut.add_done_callback(lambda f: self._reported(session, "agent.ack", f))

    def progress(self, session: AgentSession, reports: list[tuple[Ref, str]], now: float) -> None:
        fut = self.store.started_many(session.agent_id, reports, now)
        fut.add_done_callback(lambda f: self._reported(session, "agent.progress", f))

    def results(self, session: AgentSession, results: list[ResultIn], acked: dict[int, float], now: float) -> None:
        """Runs' results (``acked``: those whose ack came with them, and when each was
        pushed); once committed, the agent is told it may forget them."""
        fut = self.store.record_results(session.agent_id, results, now, acked)
        fut.add_done_callback(lambda f: self._reported(session, "agent.results", f))

    def alerts(self, session: AgentSession, alerts: list[Alert], now: float) -> int:
        """An agent's alerts (``alert.record``): each checked (a bad one is refused, naming
        it), those within the agent's rate limit recorded, one copy each (the result says,
        per alert, whether it was a new one), the rest counted. Once that is committed the
        agent is told it may forget them all (``alerted``). Returns how many were refused."""
        kept: list[AlertIn] = []
        taken: list[int] = []
        fields = self.alert_fields
        for alert in alerts:
            problem = alert_problem(alert.alert)
            if problem is not None:
                session.tell(error_frame(ProtocolError(ErrorCode.INVALID_ALERT, f"invalid alert: {problem}",
                                                       ref=alert.id)))
                continue
            taken.append(alert.id)
            kept.append(AlertIn(checksum=checksum(session.agent_id, alert.alert, fields), body=alert.alert,
                                raised_at=alert.raised_at, delivery_id=alert.delivery_id))
        refused = len(alerts) - len(taken)
        if not taken:
            return refused
        limits = self.alert_limits
        admitted = limits.admit(session.agent_id, len(kept), now)
        dropped = limits.take_dropped(session.agent_id, now, force=admitted > 0)
        if not admitted and not dropped:  # a flood's excess, counted in memory only for now
            session.send_control(Alerted(ids=taken))
            return refused
        fut = self.store.record_alerts(session.agent_id, kept[:admitted], dropped, now)
        fut.add_done_callback(lambda f: self._alerted(session, taken, dropped, f))
        return refused

    def _alerted(self, session: AgentSession, taken: list[int], dropped: int,
                 fut: asyncio.Future[Effects[list[AlertRecorded]]]) -> None:
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is not None:
            self.alert_limits.give_back(session.agent_id, dropped)
            log.warning("event=report_failed agent_id=%s error=%r", session.agent_id, exc)
            session.send_control(error_frame(ProtocolError(ErrorCode.STORAGE_UNAVAILABLE, str(exc)),
                                             retry_after=STORAGE_RETRY_AFTER))
            return
        session.send_control(Alerted(ids=taken))
        self._done("alert.record", session.agent_id, fut.result())

    async def ack_alert(self, alert_id: int) -> AlertView:
        """An operator has seen the alert (``alert.ack``): when, and its count then."""
        view = self._done("alert.ack", alert_id, await self.store.ack_alert(alert_id, self.clock.time())).result
        log.info("event=alert_acked alert_id=%d count=%d", alert_id, view.count)
        return view

    def alerts_flush(self, agent_id: str) -> None:
        """The agent's session ended: its alerts counted over the rate limit and not yet
        written are (fire and forget)."""
        dropped = self.alert_limits.take_dropped(agent_id, self.clock.time(), force=True)
        if dropped:
            self.store.record_alerts(agent_id, [], dropped, self.clock.time()).add_done_callback(_quiet)

    def agent_state(self, session: AgentSession, report: StateReport, now: float) -> None:
        """An agent's state report (``agent.state``): stored within the agent's rate limit
        (:mod:`.state_reports`), counted and dropped beyond it; refused whole (an error back)
        if the configuration in it is not one (nothing of it stored). Nothing else is
        answered: a report lost to a store failure is superseded by the next one. The first
        report of a session whose configuration is not the agent's desired one is a
        ``config_drift``: the agent is sent its desired configuration."""
        agent_id = session.agent_id
        try:
            config = check_settings(report.config)
        except ConfigError as exc:
            session.tell(error_frame(ProtocolError(ErrorCode.INVALID_CONFIG, f"state report refused: {exc.message}")))
            return
        if not self.state_limits.admit(agent_id, now):
            self.stats.states_dropped += 1
            if self.stats.states_dropped & (self.stats.states_dropped - 1) == 0:  # 1, 2, 4, 8 ...: a flood logs little
                log.warning("event=state_reports_dropped agent_id=%s dropped_total=%d", agent_id,
                            self.stats.states_dropped)
            return
        first = session.state_reports == 0
        session.state_reports += 1
        self.store.record_state(agent_id, report.state, now, config, report.config_error).add_done_callback(
            lambda f: self._state_recorded(agent_id, first, f))

    def _state_recorded(self, agent_id: str, first: bool, fut: asyncio.Future[Effects[StateRecorded]]) -> None:
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is not None:
            log.warning("event=state_not_recorded agent_id=%s error=%r", agent_id, exc)
            return
        recorded = self._done("agent.state", agent_id, fut.result()).result
        if recorded.changed:
            log.info("event=agent_state_changed agent_id=%s facts=%s", agent_id, ",".join(recorded.changed))
        if first and recorded.drifted:
            self._done("config_drift", agent_id, Effects(recorded, configures=[configure(agent_id, recorded.desired)]))
            log.info("event=config_drift agent_id=%s desired=%s reported=%s", agent_id, recorded.desired_hash[:12],
                     recorded.reported_hash[:12])

    # -- agents' configuration ------------------------------------------------------------

    async def config_set(self, target: ConfigTarget, settings: dict[str, Any], unset: list[str]) -> ConfigLayerView:
        """Set or remove keys of a tag's or an agent's configuration (``config.set``,
        ``config.unset``); the online agents it reaches are sent their new configuration."""
        effects = await self.store.config_set(target, settings, unset, self.clock.time())
        view = self._done("config.unset" if unset else "config.set", target, effects).result
        view.pushed = sum(self.push.online(agent_id) for agent_id, _ in effects.configures)
        log.info("event=config_%s scope=%s name=%s keys=%s agents=%d pushed=%d", "unset" if unset else "set",
                 target.scope, target.name, ",".join(unset or settings), view.agents, view.pushed)
        return view

    def _reported(self, session: AgentSession, operation: str, fut: asyncio.Future[Effects[None]]) -> None:
        """On commit of an agent's reports: tell it what is committed and what was refused,
        then apply the rest."""
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is not None:
            log.warning("event=report_failed agent_id=%s error=%r", session.agent_id, exc)
            session.send_control(error_frame(ProtocolError(ErrorCode.STORAGE_UNAVAILABLE, str(exc)),
                                             retry_after=STORAGE_RETRY_AFTER))
            return
        effects = fut.result()
        if operation == "agent.results":
            session.settled(effects.settled)
        refused = effects.refused
        for refusal in refused[:MAX_REFUSALS_TOLD]:
            session.send_control(error_frame(ProtocolError(ErrorCode(refusal.code), refusal.message,
                                                           ref=refusal.delivery_id)))
        if len(refused) > MAX_REFUSALS_TOLD:
            log.warning("event=refusals_truncated agent_id=%s refused=%d told=%d",
                        session.agent_id, len(refused), MAX_REFUSALS_TOLD)
        self._done(operation, session.agent_id, effects)
