"""Console RPC: what each ``req`` method does.

Each handler is bound to the method it serves (``@handler(methods.TASK_CREATE)``, the declarations
of :mod:`tether.protocol.methods`): one per method, none missing (a test checks). A method
that writes is one operation (:mod:`.operations`), answered only after it is committed and
its effects applied; a method that reads asks the store. Params arrive validated
(:func:`tether.protocol.methods.parse_params`) and the caller's role checked against the
method's least role; errors are :class:`ProtocolError` with a registry code, turned into
``error`` frames by the console session.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from ..protocol import methods
from ..protocol.actions import action_to_request
from ..protocol.alerts import AlertId, AlertsList
from ..protocol.cmdline import parse_command_line
from ..protocol.console import (
    AgentId,
    AgentResolved,
    AgentRevoke,
    AgentShow,
    AgentsList,
    Cancelled,
    ConfigSet,
    ConfigUnset,
    DeliveryEvent,
    KeyCreate,
    KeyId,
    Nothing,
    ProgressEvent,
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
    no_agent_yet,
)
from ..protocol.errors import ErrorCode, ProtocolError
from ..protocol.frames import progress_parts
from ..protocol.lifecycle import TERMINAL, DeliveryState
from ..protocol.methods import Bindings, Method, check_role, find, parse_params
from ..protocol.polling import InvalidSchedule, check_period
from .effects import Change, Progressed
from .operations import Operations
from .rpc_hooks import HANDLERS as HOOK_HANDLERS
from .schedules import check_cron, next_fire
from .store import ConfigTarget, NewSchedule, NewTask, StoreError, Timing

log = logging.getLogger("tether.rpc")

V = TypeVar("V")


def _known_agent(view: V | None, agent_id: str) -> V:
    """``view`` of the agent; UNKNOWN_AGENT if there is none."""
    if view is None:
        raise ProtocolError(ErrorCode.UNKNOWN_AGENT, f"no agent with id {agent_id!r}")
    return view

Emit = Callable[[str, Any], Awaitable[None]]
"""Send an ``event`` frame (topic, data) for the request being served."""

Handler = Callable[["ConsoleRPC", Any, Emit], Awaitable[Any]]
"""Serve one request: the checked params, and where its events go; return the result."""

handler: Bindings[Handler] = Bindings("handler")
"""Each method's handler: ``handler[methods.TASK_CREATE]``."""


class ConsoleRPC:
    def __init__(self, operations: Operations, *, min_interval: float = 10.0) -> None:
        self.operations = operations
        self.store = operations.store
        self.clock = operations.clock
        self.min_interval = min_interval
        """The polling floor, which bounds schedule periods too (config ``min_interval``)."""

    async def call(self, method: str, params: dict[str, Any], emit: Emit, role: str = "admin", *,
                   large: bool = False) -> Any:
        """``large``: the request came in a large message; its params are checked (which
        walks them in Python) in a worker thread, which lets the event loop run meanwhile."""
        if large:
            declared, parsed = await asyncio.to_thread(_parse, method, params)
        else:
            declared, parsed = _parse(method, params)
        check_role(role, declared.name)
        try:
            return await handler[declared](self, parsed, emit)
        except StoreError as exc:
            raise ProtocolError(ErrorCode.STORAGE_UNAVAILABLE, f"storage unavailable: {exc}") from None

    # -- agents and tags ------------------------------------------------------------------

    @handler(methods.AGENTS_LIST)
    async def m_agents_list(self, p: AgentsList, emit: Emit) -> Any:
        agents = await self.store.list_agents(p.tag, removed=p.all)
        for a in agents:
            a.online = self.operations.push.online(a.agent_id)
        if p.online:
            return [a for a in agents if a.online]
        if p.stale is not None:
            seen_before = self.clock.time() - p.stale
            return [a for a in agents if not a.online and (a.last_seen is None or a.last_seen <= seen_before)]
        return [a for a in agents if not a.online] if p.offline else agents

    @handler(methods.AGENT_GET)
    async def m_agent_get(self, p: AgentShow, emit: Emit) -> Any:
        detail = _known_agent(await self.store.get_agent(p.agent_id, changes=p.changes), p.agent_id)
        detail.agent.online = self.operations.push.online(p.agent_id)
        detail.config = await self.store.agent_config(p.agent_id)
        return detail

    # -- agents' configuration ------------------------------------------------------------

    @handler(methods.CONFIG_SET, methods.CONFIG_UNSET)
    async def m_config_set(self, p: ConfigSet | ConfigUnset, emit: Emit) -> Any:
        target = ConfigTarget("tag", p.tag) if p.tag is not None else ConfigTarget("agent", p.agent or "")
        if isinstance(p, ConfigSet):
            return await self.operations.config_set(target, p.settings, [])
        return await self.operations.config_set(target, {}, p.keys)

    @handler(methods.CONFIG_GET)
    async def m_config_get(self, p: AgentId, emit: Emit) -> Any:
        return _known_agent(await self.store.agent_config(p.agent_id), p.agent_id)

    @handler(methods.CONFIG_DRIFT)
    async def m_config_drift(self, p: Nothing, emit: Emit) -> Any:
        rows = await self.store.config_drift()
        for row in rows:
            row.online = self.operations.push.online(row.agent_id)
        return rows

    @handler(methods.TAG_ADD)
    async def m_tag_add(self, p: TagChange, emit: Emit) -> Any:
        effects = await self.operations.tag_add(p.agent_id, p.tag)
        return TagChanged(agent_id=p.agent_id, tag=p.tag, new_deliveries=len(effects.items))

    @handler(methods.TAG_RM)
    async def m_tag_rm(self, p: TagChange, emit: Emit) -> Any:
        effects = await self.operations.tag_rm(p.agent_id, p.tag)
        return TagChanged(agent_id=p.agent_id, tag=p.tag, new_deliveries=len(effects.items))

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
        delay, jitter = (p.delay, p.jitter) if isinstance(p, TaskCreate) else (0.0, 0.0)
        return NewTask(command=command, args=args, target_kind=kind, target=target, priority=p.priority, ttl=p.ttl,
                       hide_polling_output=not p.show_polling_output, selector=selector,
                       investigation_id=investigation, delay=delay, jitter=jitter)

    @handler(methods.TASK_CREATE)
    async def m_task_create(self, p: TaskCreate, emit: Emit) -> Any:
        spec = await self._new_task(p)
        effects = await self.operations.create_task(spec)
        target = f"selector:{spec.selector!r}" if spec.selector is not None else \
            "all" if spec.target_kind == "all" else f"{spec.target_kind}:{spec.target}"
        created = len(effects.items)
        delayed = sum(1 for item in effects.items if item.not_before) if spec.delay or spec.jitter else 0
        return TaskCreated(task_id=effects.result, deliveries=created, note="" if created else no_agent_yet(target),
                           delayed=delayed)

    @handler(methods.TASK_LIST)
    async def m_task_list(self, p: TaskList, emit: Emit) -> Any:
        if p.agent is not None and await self.store.agent_commands(p.agent) is None:
            raise ProtocolError(ErrorCode.UNKNOWN_AGENT, f"no agent with id {p.agent!r}")
        return await self.store.list_deliveries(agent_id=p.agent, tag=p.tag, states=p.states(), limit=p.limit,
                                                selector=p.selector)

    async def _task(self, task_id: int, history: bool = False) -> TaskView:
        view = await self.store.get_task(task_id, history=history, now=self.clock.time())
        if view is None:
            raise ProtocolError(ErrorCode.UNKNOWN_TASK, f"no task {task_id}")
        return view

    @handler(methods.TASK_GET)
    async def m_task_get(self, p: TaskGet, emit: Emit) -> Any:
        return await self._task(p.task_id, p.history)

    @handler(methods.TASK_WAIT)
    async def m_task_wait(self, p: TaskWait, emit: Emit) -> Any:
        """Answer when no delivery of the task can change any more (or at the timeout),
        sending an ``event`` for every state change meanwhile. A ``waiting`` delivery (a
        polling command's next run is scheduled) is not finished: XSOAR's waiter "does not
        proceed until it is done with all scheduled commands"."""
        return await self._follow(p, emit, live=False)

    @handler(methods.TASK_WATCH)
    async def m_task_watch(self, p: TaskWait, emit: Emit) -> Any:
        """As ``task.wait``, and first the task as it stands (a ``task`` event), then every
        progress report too (``progress`` events): the latest of each delivery's since the
        last event, so a console is sent at most what it can read."""
        return await self._follow(p, emit, live=True)

    async def _follow(self, p: TaskWait, emit: Emit, *, live: bool) -> TaskView:
        changed = asyncio.Event()
        events: list[Change] = []
        progress: dict[int, Progressed] = {}
        watchers = self.operations.watchers
        timed_out = False

        def notify(change: Change) -> None:
            events.append(change)
            changed.set()

        def progressed(report: Progressed) -> None:
            progress[report.delivery_id] = report  # the latest only: O(deliveries) held
            changed.set()

        def time_out() -> None:
            nonlocal timed_out
            timed_out = True
            changed.set()

        def watch(task_id: int) -> Callable[[], None]:
            return watchers.watch(task_id, notify, progressed if live else None)

        unwatches = {p.task_id: watch(p.task_id)}

        def watch_sequels(view: TaskView) -> None:
            # Polling sequences the task's runs started are tasks of their own (sequels),
            # shown with it: wait for them too (XSOAR: "until there is no future execution").
            for d in view.deliveries:
                if d.task_id not in unwatches:
                    unwatches[d.task_id] = watch(d.task_id)

        timer = None if p.timeout is None else self.clock.call_at(self.clock.time() + p.timeout, time_out)
        try:
            view = await self._task(p.task_id)
            watch_sequels(view)
            if live:
                await emit("task", view)
            while not all(DeliveryState(d.state) in TERMINAL for d in view.deliveries):
                await changed.wait()
                if timed_out:
                    break
                # Cleared before the read: a change committed while reading sets it again.
                changed.clear()
                batch, events[:] = list(events), []
                reports = list(progress.values())
                progress.clear()
                for change in batch:
                    await emit("delivery", self._event(change))
                for report in reports:
                    await emit("progress", self._progress_event(report))
                if batch:
                    view = await self._task(p.task_id)
                    watch_sequels(view)
            return view
        finally:
            if timer is not None:
                timer.cancel()
            for unwatch in unwatches.values():
                unwatch()

    def _progress_event(self, report: Progressed) -> ProgressEvent:
        percent, message = progress_parts(report.progress)
        return ProgressEvent(delivery_id=report.delivery_id, agent_id=report.agent_id, progress=report.progress,
                             percent=percent, message=message, updated_at=self.clock.time())

    def _event(self, change: Change) -> DeliveryEvent:
        return DeliveryEvent(
            delivery_id=change.delivery_id, agent_id=change.agent_id, state=change.new,
            previous=change.old, terminal=change.new in TERMINAL, updated_at=self.clock.time(),
        )

    @handler(methods.TASK_CANCEL)
    async def m_task_cancel(self, p: TaskCancel, emit: Emit) -> Any:
        effects = await self.operations.untask(task_id=p.task_id, agent_id=p.agent, tag=p.tag, selector=p.selector)
        return Cancelled(cancelled=effects.result.cancelled, tasks=effects.result.tasks)

    # -- alerts ---------------------------------------------------------------------------

    @handler(methods.ALERTS_LIST)
    async def m_alerts_list(self, p: AlertsList, emit: Emit) -> Any:
        since = None if p.within is None else self.clock.time() - p.within
        return await self.store.list_alerts(agent_id=p.agent, kind=p.kind, since=since, limit=p.limit)

    @handler(methods.ALERT_GET)
    async def m_alert_get(self, p: AlertId, emit: Emit) -> Any:
        view = await self.store.get_alert(p.alert_id)
        if view is None:
            raise ProtocolError(ErrorCode.UNKNOWN_ALERT, f"no alert {p.alert_id} (see: tetherctl alerts)")
        return view

    @handler(methods.ALERT_ACK)
    async def m_alert_ack(self, p: AlertId, emit: Emit) -> Any:
        return await self.operations.ack_alert(p.alert_id)

    # -- recurring schedules --------------------------------------------------------------

    @handler(methods.SCHEDULE_ADD)
    async def m_schedule_add(self, p: ScheduleAdd, emit: Emit) -> Any:
        task = await self._new_task(p)  # a bad command line is refused here, not at the first firing
        now = self.clock.time()
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
        view = await self.operations.add_schedule(spec, first)
        if task.target_kind == "tag" and not await self.store.list_agents(task.target):
            view.note = no_agent_yet(view.target, schedule=True)
        return view

    @handler(methods.SCHEDULE_LIST)
    async def m_schedule_list(self, p: ScheduleList, emit: Emit) -> Any:
        return await self.store.list_schedules()

    @handler(methods.SCHEDULE_GET)
    async def m_schedule_get(self, p: ScheduleName, emit: Emit) -> Any:
        view = await self.store.get_schedule(p.name)
        if view is None:
            raise ProtocolError(ErrorCode.UNKNOWN_SCHEDULE, f"no schedule named {p.name!r} (see: tetherctl schedule list)")
        return view

    @handler(methods.SCHEDULE_PAUSE)
    async def m_schedule_pause(self, p: ScheduleName, emit: Emit) -> Any:
        return await self.operations.pause_schedule(p.name, True)

    @handler(methods.SCHEDULE_RESUME)
    async def m_schedule_resume(self, p: ScheduleName, emit: Emit) -> Any:
        return await self.operations.pause_schedule(p.name, False)

    @handler(methods.SCHEDULE_RM)
    async def m_schedule_rm(self, p: ScheduleName, emit: Emit) -> Any:
        await self.operations.remove_schedule(p.name)
        return ScheduleRemoved(name=p.name, removed=True)

    # -- credentials (their least role is admin: protocol.methods) ----------------------

    @handler(methods.TOKEN_CREATE)
    async def m_token_create(self, p: TokenCreate, emit: Emit) -> Any:
        return await self.operations.create_token(p.role, p.label)

    @handler(methods.TOKEN_LIST)
    async def m_token_list(self, p: Nothing, emit: Emit) -> Any:
        return await self.store.list_tokens()

    @handler(methods.TOKEN_REVOKE)
    async def m_token_revoke(self, p: TokenId, emit: Emit) -> Any:
        revoked, closed = await self.operations.revoke_token(p.token_id)
        return Revoked(revoked=revoked, sessions_closed=closed)

    @handler(methods.KEY_CREATE)
    async def m_key_create(self, p: KeyCreate, emit: Emit) -> Any:
        return await self.operations.create_key(p.tags, p.expires_in, p.uses,
                                                allow_requested_tags=p.allow_requested_tags)

    @handler(methods.KEY_LIST)
    async def m_key_list(self, p: Nothing, emit: Emit) -> Any:
        return await self.store.list_keys()

    @handler(methods.KEY_REVOKE)
    async def m_key_revoke(self, p: KeyId, emit: Emit) -> Any:
        revoked = await self.operations.revoke_key(p.key_id)
        return Revoked(revoked=revoked, sessions_closed=0)  # an enrollment session ends once enrolled

    @handler(methods.AGENT_REVOKE)
    async def m_agent_revoke(self, p: AgentRevoke, emit: Emit) -> Any:
        revoked, closed = await self.operations.revoke_agent(p.agent_id)
        return Revoked(revoked=revoked, sessions_closed=closed)

    @handler(methods.AGENT_APPROVE)
    async def m_agent_approve(self, p: AgentId, emit: Emit) -> Any:
        await self.operations.approve_agent(p.agent_id)
        return AgentResolved(agent_id=p.agent_id, outcome="approved")

    @handler(methods.AGENT_RM)
    async def m_agent_rm(self, p: AgentId, emit: Emit) -> Any:
        cancelled, closed = await self.operations.remove_agent(p.agent_id)
        return AgentResolved(agent_id=p.agent_id, outcome="removed", cancelled=cancelled, sessions_closed=closed)

    @handler(methods.AGENT_MERGE)
    async def m_agent_merge(self, p: AgentId, emit: Emit) -> Any:
        into, cancelled, closed = await self.operations.merge_agent(p.agent_id)
        return AgentResolved(agent_id=p.agent_id, outcome="merged", into=into, cancelled=cancelled,
                             sessions_closed=closed)


for _method, _serve in HOOK_HANDLERS:  # hook.*: in rpc_hooks, bound here like the rest
    handler(_method)(_serve)


def _parse(method: str, params: dict[str, Any]) -> tuple[Method, Any]:
    """The method and its checked params (an action object is translated first)."""
    if method == "action":
        method, params = action_to_request(params)
    return find(method), parse_params(method, params)
