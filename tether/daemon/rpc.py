"""Console RPC: what each ``req`` method does.

Every write is answered only after it is committed (the store's promise). Params arrive
validated (:func:`tether.protocol.console.parse_params`); errors are
:class:`ProtocolError` with a registry code, turned into ``error`` frames by the server.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from ..protocol.actions import action_to_request
from ..protocol.cmdline import parse_command_line
from ..protocol.console import (
    AgentId,
    AgentResolved,
    AgentRevoke,
    AgentsList,
    Cancelled,
    KeyCreate,
    KeyId,
    Nothing,
    Revoked,
    ScheduleAdd,
    ScheduleList,
    ScheduleName,
    ScheduleRemoved,
    TagChange,
    TagChanged,
    TaskCancel,
    TaskCreate,
    TaskCreated,
    TaskGet,
    TaskList,
    TaskView,
    TaskWait,
    TokenCreate,
    TokenId,
    check_role,
    no_agent_yet,
    parse_params,
)
from ..protocol.errors import ErrorCode, ProtocolError
from ..protocol.lifecycle import TERMINAL, DeliveryState
from ..protocol.polling import InvalidSchedule, check_period
from .broker import Broker, Timer
from .schedules import check_cron, next_fire
from .store import Change, NewSchedule, NewTask, StoreError, Timing

log = logging.getLogger("tether.rpc")

Emit = Callable[[str, Any], Awaitable[None]]


class Sessions(Protocol):
    """What the server does for a revocation: close the sessions using what was revoked."""

    def close_console_sessions(self, token_id: int, reason: str) -> int: ...
    def close_agent_session(self, agent_id: str, reason: str, *, reconnect: bool = False) -> int: ...


class _NoSessions:
    def close_console_sessions(self, token_id: int, reason: str) -> int:
        return 0

    def close_agent_session(self, agent_id: str, reason: str, *, reconnect: bool = False) -> int:
        return 0


class ConsoleRPC:
    def __init__(self, broker: Broker, *, min_interval: float = 10.0, sessions: Sessions | None = None) -> None:
        self.broker = broker
        self.store = broker.store
        self.min_interval = min_interval
        """The polling floor, which bounds schedule periods too (config ``min_interval``)."""
        self.sessions: Sessions = sessions or _NoSessions()

    async def call(self, method: str, params: dict[str, Any], emit: Emit, role: str = "admin", *,
                   large: bool = False) -> Any:
        """``large``: the request came in a large message; its params are checked (which
        walks them in Python) in a worker thread, which lets the event loop run meanwhile."""
        if large:
            method, parsed = await asyncio.to_thread(_parse, method, params)
        else:
            method, parsed = _parse(method, params)
        check_role(role, method)
        handler = getattr(self, "m_" + method.replace(".", "_"))
        try:
            return await handler(parsed, emit)
        except StoreError as exc:
            raise ProtocolError(ErrorCode.STORAGE_UNAVAILABLE, f"storage unavailable: {exc}") from None

    # -- agents and tags ------------------------------------------------------------------

    async def m_agents_list(self, p: AgentsList, emit: Emit) -> Any:
        agents = await self.store.list_agents(p.tag, removed=p.all)
        for a in agents:
            a.online = self.broker.online(a.agent_id)
        return [a for a in agents if a.online] if p.online else agents

    async def m_tag_add(self, p: TagChange, emit: Emit) -> Any:
        items = await self.store.tag_add(p.agent_id, p.tag, self.broker.clock())
        self.broker.offer(items)
        return TagChanged(agent_id=p.agent_id, tag=p.tag, new_deliveries=len(items))

    async def m_tag_rm(self, p: TagChange, emit: Emit) -> Any:
        items = await self.store.tag_rm(p.agent_id, p.tag, self.broker.clock())
        self.broker.offer(items)
        return TagChanged(agent_id=p.agent_id, tag=p.tag, new_deliveries=len(items))

    # -- tasks ----------------------------------------------------------------------------

    async def _new_task(self, p: TaskCreate | ScheduleAdd) -> NewTask:
        """The task a ``task.create`` (or each firing of a ``schedule.add``) makes, checked:
        the command line split, an agent target known and serving the command."""
        command, args = parse_command_line(p.command)
        args.update(p.args)
        if p.agent is not None:
            served = await self.store.agent_commands(p.agent)
            if served is None:
                raise ProtocolError(ErrorCode.UNKNOWN_AGENT, f"no agent with id {p.agent!r}")
            if served and command not in served:
                raise ProtocolError(
                    ErrorCode.UNKNOWN_COMMAND,
                    f"agent {p.agent} does not serve {command!r} (it serves: {', '.join(sorted(served))})",
                )
            kind, target = "agent", p.agent
        elif p.tag is not None:
            kind, target = "tag", p.tag
        else:
            kind, target = "all", ""
        selector, investigation = (p.selector, p.investigation_id) if isinstance(p, TaskCreate) else (None, "")
        return NewTask(command=command, args=args, target_kind=kind, target=target, priority=p.priority, ttl=p.ttl,
                       hide_polling_output=not p.show_polling_output, selector=selector,
                       investigation_id=investigation)

    async def m_task_create(self, p: TaskCreate, emit: Emit) -> Any:
        spec = await self._new_task(p)
        now = self.broker.clock()
        task_id, items = await self.store.create_task(spec, now)
        self.broker.schedule_expiry(task_id, now + p.ttl,  # the expires_at the store recorded
                                    one_agent=spec.target_kind == "agent")
        if spec.selector is not None:
            self.broker.selecting(task_id, now + p.ttl)
        self.broker.offer(items)
        target = f"selector:{spec.selector!r}" if spec.selector is not None else \
            "all" if spec.target_kind == "all" else f"{spec.target_kind}:{spec.target}"
        log.info("event=task_created task_id=%d command=%s target=%s deliveries=%d", task_id, spec.command, target,
                 len(items))
        return TaskCreated(task_id=task_id, deliveries=len(items), note="" if items else no_agent_yet(target))

    async def m_task_list(self, p: TaskList, emit: Emit) -> Any:
        if p.agent is not None and await self.store.agent_commands(p.agent) is None:
            raise ProtocolError(ErrorCode.UNKNOWN_AGENT, f"no agent with id {p.agent!r}")
        return await self.store.list_deliveries(agent_id=p.agent, tag=p.tag, states=p.states(), limit=p.limit,
                                                selector=p.selector)

    async def _task(self, task_id: int, history: bool = False) -> TaskView:
        view = await self.store.get_task(task_id, history=history, now=self.broker.clock())
        if view is None:
            raise ProtocolError(ErrorCode.UNKNOWN_TASK, f"no task {task_id}")
        return view

    async def m_task_get(self, p: TaskGet, emit: Emit) -> Any:
        return await self._task(p.task_id, p.history)

    async def m_task_wait(self, p: TaskWait, emit: Emit) -> Any:
        """Answer when no delivery of the task can change any more (or at the timeout),
        sending an ``event`` for every state change meanwhile. A ``waiting`` delivery (a
        polling command's next run is scheduled) is not finished: XSOAR's waiter "does not
        proceed until it is done with all scheduled commands"."""
        changed = asyncio.Event()
        events: list[Change] = []

        def notify(change: Change) -> None:
            events.append(change)
            changed.set()

        unwatches = {p.task_id: self.broker.watch(p.task_id, notify)}

        def watch_sequels(view: TaskView) -> None:
            # Polling sequences the task's runs started are tasks of their own (sequels),
            # shown with it: wait for them too (XSOAR: "until there is no future execution").
            for d in view.deliveries:
                if d.task_id not in unwatches:
                    unwatches[d.task_id] = self.broker.watch(d.task_id, notify)

        try:
            view = await self._task(p.task_id)
            watch_sequels(view)
            loop = asyncio.get_running_loop()
            deadline = None if p.timeout is None else loop.time() + p.timeout
            while not all(DeliveryState(d.state) in TERMINAL for d in view.deliveries):
                remaining = None if deadline is None else deadline - loop.time()
                if remaining is not None and remaining <= 0:
                    break
                try:
                    await asyncio.wait_for(changed.wait(), remaining)
                except TimeoutError:
                    break
                # Cleared before the read: a change committed while reading sets it again.
                changed.clear()
                batch, events[:] = list(events), []
                for change in batch:
                    await emit("delivery", self.broker.delivery_event(change))
                view = await self._task(p.task_id)
                watch_sequels(view)
            return view
        finally:
            for unwatch in unwatches.values():
                unwatch()

    async def m_task_cancel(self, p: TaskCancel, emit: Emit) -> Any:
        changes, closed = await self.store.cancel(task_id=p.task_id, agent_id=p.agent, tag=p.tag, selector=p.selector,
                                                  now=self.broker.clock())
        self.broker.apply(changes, withdraw=True)
        if self.broker.selector_tasks_active():
            self.broker.selecting_only(await self.store.selecting())
        log.info("event=untask task_id=%s agent_id=%s tag=%s selector=%r cancelled=%d tasks_closed=%d", p.task_id,
                 p.agent, p.tag, p.selector, len(changes), closed)
        return Cancelled(cancelled=len(changes), tasks=closed)


    # -- recurring schedules --------------------------------------------------------------

    async def m_schedule_add(self, p: ScheduleAdd, emit: Emit) -> Any:
        task = await self._new_task(p)  # a bad command line is refused here, not at the first firing
        now = self.broker.clock()
        if p.every is not None:
            try:
                check_period(p.every, self.min_interval)
            except InvalidSchedule as exc:
                raise ProtocolError(ErrorCode.INVALID_PARAMS, str(exc)) from None
        else:
            assert p.cron is not None
            check_cron(p.cron, p.timezone)
        first = next_fire(Timing(every=p.every, cron=p.cron, timezone=p.timezone, anchor=now), now)
        if math.isinf(first):
            raise ProtocolError(ErrorCode.INVALID_PARAMS, f"cron expression {p.cron!r} matches no date")
        spec = NewSchedule(name=p.name, command=p.command, task=NewTask(
            command=p.command, args=p.args, target_kind=task.target_kind, target=task.target, priority=p.priority,
            ttl=p.ttl, hide_polling_output=not p.show_polling_output,
        ), every=p.every, cron=p.cron, timezone=p.timezone, missed=p.missed)
        view = await self.store.add_schedule(spec, now, first)
        self.broker.set_timer(Timer.SCHEDULE, view.schedule_id, first)
        log.info("event=schedule_added name=%s every=%s cron=%r target=%s", p.name, p.every, p.cron, view.target)
        if task.target_kind == "tag" and not await self.store.list_agents(task.target):
            view.note = no_agent_yet(view.target, schedule=True)
        return view

    async def m_schedule_list(self, p: ScheduleList, emit: Emit) -> Any:
        return await self.store.list_schedules()

    async def m_schedule_get(self, p: ScheduleName, emit: Emit) -> Any:
        view = await self.store.get_schedule(p.name)
        if view is None:
            raise ProtocolError(ErrorCode.UNKNOWN_SCHEDULE, f"no schedule named {p.name!r} (see: tetherctl schedule list)")
        return view

    async def _pause(self, name: str, paused: bool) -> Any:
        view = await self.store.pause_schedule(name, paused, self.broker.clock(), next_fire)
        if view.next_fire_at is None:
            self.broker.clear_timer(Timer.SCHEDULE, view.schedule_id)
        else:
            self.broker.set_timer(Timer.SCHEDULE, view.schedule_id, view.next_fire_at)
        log.info("event=schedule_%s name=%s", "paused" if paused else "resumed", name)
        return view

    async def m_schedule_pause(self, p: ScheduleName, emit: Emit) -> Any:
        return await self._pause(p.name, True)

    async def m_schedule_resume(self, p: ScheduleName, emit: Emit) -> Any:
        return await self._pause(p.name, False)

    async def m_schedule_rm(self, p: ScheduleName, emit: Emit) -> Any:
        schedule_id = await self.store.remove_schedule(p.name)
        self.broker.clear_timer(Timer.SCHEDULE, schedule_id)
        log.info("event=schedule_removed name=%s", p.name)
        return ScheduleRemoved(name=p.name, removed=True)

    # -- credentials (admin tokens only: protocol.console.ADMIN_METHODS) -----------------

    async def m_token_create(self, p: TokenCreate, emit: Emit) -> Any:
        view = await self.store.create_token(p.role, p.label, self.broker.clock())
        log.info("event=token_created token_id=%d role=%s label=%r", view.token_id, p.role, p.label)
        return view

    async def m_token_list(self, p: Nothing, emit: Emit) -> Any:
        return await self.store.list_tokens()

    async def m_token_revoke(self, p: TokenId, emit: Emit) -> Any:
        revoked = await self.store.revoke_token(p.token_id, self.broker.clock())
        closed = self.sessions.close_console_sessions(p.token_id, f"admin token {p.token_id} was revoked")
        log.info("event=token_revoked token_id=%d sessions_closed=%d", p.token_id, closed)
        return Revoked(revoked=revoked, sessions_closed=closed)

    async def m_key_create(self, p: KeyCreate, emit: Emit) -> Any:
        now = self.broker.clock()
        expires_at = None if p.expires_in is None else now + p.expires_in
        view = await self.store.create_key(p.tags, expires_at, p.uses, now, allow_requested_tags=p.allow_requested_tags)
        log.info("event=key_created key_id=%d tags=%s allow_requested_tags=%s", view.key_id, ",".join(view.tags),
                 p.allow_requested_tags)
        return view

    async def m_key_list(self, p: Nothing, emit: Emit) -> Any:
        return await self.store.list_keys()

    async def m_key_revoke(self, p: KeyId, emit: Emit) -> Any:
        revoked = await self.store.revoke_key(p.key_id, self.broker.clock())
        log.info("event=key_revoked key_id=%d", p.key_id)
        return Revoked(revoked=revoked, sessions_closed=0)  # an enrollment session ends once enrolled

    async def m_agent_revoke(self, p: AgentRevoke, emit: Emit) -> Any:
        revoked = await self.store.revoke_agent(p.agent_id)
        closed = self._cut_off(p.agent_id, f"agent {p.agent_id}'s token was revoked")
        log.info("event=agent_revoked agent_id=%s sessions_closed=%d", p.agent_id, closed)
        return Revoked(revoked=revoked, sessions_closed=closed)

    def _cut_off(self, agent_id: str, reason: str, *, reconnect: bool = False) -> int:
        """After a commit that changed the agent's credentials, in the same step: count the
        change (a login in flight then reads the token again) and end the agent's session."""
        self.broker.identity_changes += 1
        return self.sessions.close_agent_session(agent_id, reason, reconnect=reconnect)

    async def m_agent_approve(self, p: AgentId, emit: Emit) -> Any:
        await self.store.approve_agent(p.agent_id)
        log.info("event=agent_approved agent_id=%s", p.agent_id)
        return AgentResolved(agent_id=p.agent_id, outcome="approved")

    async def m_agent_rm(self, p: AgentId, emit: Emit) -> Any:
        changes = await self.store.remove_agent(p.agent_id, self.broker.clock())
        self.broker.apply(changes, withdraw=True)  # the cancels are queued before the session ends
        closed = self._cut_off(p.agent_id, f"agent {p.agent_id} was removed")
        log.info("event=agent_removed agent_id=%s cancelled=%d sessions_closed=%d", p.agent_id, len(changes), closed)
        return AgentResolved(agent_id=p.agent_id, outcome="removed", cancelled=len(changes), sessions_closed=closed)

    async def m_agent_merge(self, p: AgentId, emit: Emit) -> Any:
        into, changes = await self.store.merge_agent(p.agent_id, self.broker.clock())
        self.broker.apply(changes, withdraw=True)
        closed = self._cut_off(into, f"agent {into}'s identity was taken over by {p.agent_id} (agent merge)")
        closed += self._cut_off(p.agent_id, f"merged into agent {into}: log in again", reconnect=True)
        log.info("event=agent_merged agent_id=%s into=%s cancelled=%d sessions_closed=%d", p.agent_id, into,
                 len(changes), closed)
        return AgentResolved(agent_id=p.agent_id, outcome="merged", into=into, cancelled=len(changes),
                             sessions_closed=closed)


def _parse(method: str, params: dict[str, Any]) -> tuple[str, Any]:
    """The method and its checked params (an action object is translated first)."""
    if method == "action":
        method, params = action_to_request(params)
    return method, parse_params(method, params)
