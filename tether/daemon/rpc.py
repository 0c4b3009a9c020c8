"""Console RPC: what each ``req`` method does.

Every write is answered only after it is committed (the store's promise). Params arrive
validated (:func:`tether.protocol.console.parse_params`); errors are
:class:`ProtocolError` with a registry code, turned into ``error`` frames by the server.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from ..protocol.actions import action_to_request
from ..protocol.cmdline import parse_command_line
from ..protocol.console import (
    AgentsList,
    Cancelled,
    TagChange,
    TagChanged,
    TaskCancel,
    TaskCreate,
    TaskCreated,
    TaskGet,
    TaskList,
    TaskView,
    TaskWait,
    check_role,
    parse_params,
)
from ..protocol.errors import ErrorCode, ProtocolError
from ..protocol.states import TERMINAL, DeliveryState
from .broker import Broker
from .store import Change, NewTask, StoreError

log = logging.getLogger("tether.rpc")

Emit = Callable[[str, Any], Awaitable[None]]


class ConsoleRPC:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.store = broker.store

    async def call(self, method: str, params: dict[str, Any], emit: Emit, role: str = "admin") -> Any:
        if method == "action":
            method, params = action_to_request(params)
        parsed = parse_params(method, params)
        check_role(role, method)
        handler = getattr(self, "m_" + method.replace(".", "_"))
        try:
            return await handler(parsed, emit)
        except StoreError as exc:
            raise ProtocolError(ErrorCode.STORAGE_UNAVAILABLE, f"storage unavailable: {exc}") from None

    # -- agents and tags ------------------------------------------------------------------

    async def m_agents_list(self, p: AgentsList, emit: Emit) -> Any:
        agents = await self.store.list_agents(p.tag)
        for a in agents:
            a.online = self.broker.online(a.agent_id)
        return [a for a in agents if a.online] if p.online else agents

    async def m_tag_add(self, p: TagChange, emit: Emit) -> Any:
        items = await self.store.tag_add(p.agent_id, p.tag, self.broker.clock())
        self.broker.offer(items)
        return TagChanged(agent_id=p.agent_id, tag=p.tag, new_deliveries=len(items))

    async def m_tag_rm(self, p: TagChange, emit: Emit) -> Any:
        if not await self.store.tag_rm(p.agent_id, p.tag, self.broker.clock()):
            raise ProtocolError(ErrorCode.UNKNOWN_TAG, f"agent {p.agent_id} does not carry tag {p.tag!r}")
        return TagChanged(agent_id=p.agent_id, tag=p.tag)

    # -- tasks ----------------------------------------------------------------------------

    async def m_task_create(self, p: TaskCreate, emit: Emit) -> Any:
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
        spec = NewTask(command=command, args=args, target_kind=kind, target=target, priority=p.priority, ttl=p.ttl)
        now = self.broker.clock()
        task_id, items = await self.store.create_task(spec, now)
        self.broker.schedule_expiry(task_id, now + p.ttl)  # the expires_at the store recorded
        self.broker.offer(items)
        log.info("event=task_created task_id=%d command=%s target=%s deliveries=%d",
                 task_id, command, kind if kind == "all" else f"{kind}:{target}", len(items))
        return TaskCreated(task_id=task_id, deliveries=len(items))

    async def m_task_list(self, p: TaskList, emit: Emit) -> Any:
        return await self.store.list_deliveries(agent_id=p.agent, tag=p.tag, states=p.states(), limit=p.limit)

    async def _task(self, task_id: int) -> TaskView:
        view = await self.store.get_task(task_id)
        if view is None:
            raise ProtocolError(ErrorCode.UNKNOWN_TASK, f"no task {task_id}")
        return view

    async def m_task_get(self, p: TaskGet, emit: Emit) -> Any:
        return await self._task(p.task_id)

    async def m_task_wait(self, p: TaskWait, emit: Emit) -> Any:
        """Answer when no delivery of the task can change any more (or at the timeout),
        sending an ``event`` for every state change meanwhile."""
        changed = asyncio.Event()
        events: list[Change] = []

        def notify(change: Change) -> None:
            events.append(change)
            changed.set()

        unwatch = self.broker.watch(p.task_id, notify)
        try:
            view = await self._task(p.task_id)
            loop = asyncio.get_running_loop()
            deadline = None if p.timeout is None else loop.time() + p.timeout
            while not all(DeliveryState(d.state) in TERMINAL for d in view.deliveries):
                remaining = None if deadline is None else deadline - loop.time()
                if remaining is not None and remaining <= 0:
                    break
                changed.clear()
                try:
                    await asyncio.wait_for(changed.wait(), remaining)
                except TimeoutError:
                    break
                batch, events[:] = list(events), []
                for change in batch:
                    await emit("delivery", self.broker.delivery_event(change))
                view = await self._task(p.task_id)
            return view
        finally:
            unwatch()

    async def m_task_cancel(self, p: TaskCancel, emit: Emit) -> Any:
        changes = await self.store.cancel(task_id=p.task_id, agent_id=p.agent, tag=p.tag, now=self.broker.clock())
        self.broker.apply(changes)
        log.info("event=untask task_id=%s agent_id=%s tag=%s cancelled=%d", p.task_id, p.agent, p.tag, len(changes))
        return Cancelled(cancelled=len(changes))

