"""An in-memory Store: every promise of :class:`~tether.daemon.store.Store` kept in dicts,
nothing on disk (a restart forgets everything). For tests that need a store and not
SQLite; ``tests/daemon/store`` runs the same contract suite on it as on SQLite.

A write runs at once and whole: it checks everything it may refuse before it changes
anything, so a refused write changes nothing, and one write is never seen half done.
Writes are applied in the order they are submitted (each is done when the call returns
or its future is made). The lifecycle decides every state change; this applies the
decisions, as the SQLite store does, and answers the same views (:mod:`.views`).
"""

from __future__ import annotations

import asyncio

from ...protocol import lifecycle
from ...protocol.codec import unpack
from ...protocol.console import AgentView, DeliveryRow, TaskView
from ...protocol.errors import ErrorCode, ProtocolError
from ...protocol.lifecycle import (
    BORN,
    PENDING,
    PUSHABLE,
    DeliveryEvent,
    DeliveryState,
    TaskEvent,
    TaskState,
)
from ...protocol.tags import check_tag_count
from ..effects import Effects, PushItem, Timer
from . import (
    NewTask,
    Store,
    StoreStats,
    Untasked,
    views,
)
from .memory_agents import MemoryAgents
from .memory_alerts import MemoryAlerts
from .memory_hooks import MemoryHooks
from .memory_runs import MemoryRuns
from .memory_schedules import MemorySchedules
from .memory_states import MemoryStates
from .memory_tables import DeliveryRecord, MemoryTables, TaskRecord
from .rules import MAX_ID


class MemoryStore(MemoryAgents, MemoryRuns, MemorySchedules, MemoryHooks, MemoryStates, MemoryTables, MemoryAlerts):
    """The in-memory store (see the module docstring)."""

    async def open(self) -> None:
        self._open = True

    async def close(self) -> None:
        self._open = False

    async def flush(self) -> None:
        self._check_open()

    def stats(self) -> StoreStats:
        return StoreStats(entered=dict(self._entered), commits=self._writes, commit_ops=self._writes)

    async def create_task(self, task: NewTask, now: float) -> Effects[int]:
        def op() -> Effects[int]:
            if task.target_kind == "agent":
                self._live(task.target)
            return self._insert_task(task, now)

        return self._write(op)

    def mark_sent(self, delivery_ids: list[int], now: float) -> None:
        def op() -> None:
            for d_id in delivery_ids:
                d = self._deliveries.get(d_id)
                if d is not None and d.state == BORN:  # every other state ignores it
                    self._apply(d, lifecycle.mark_sent(d_id, d.state, now), now)

        self._write(op)

    def expire_task(self, task_id: int, now: float) -> asyncio.Future[Effects[None]]:
        def op() -> Effects[None]:
            effects: Effects[None] = Effects(None)
            self._close_tasks(TaskEvent.TTL_END, lambda t: t.id == task_id)
            self._end(effects, lambda d: d.task_id == task_id, DeliveryEvent.TTL_END, now, lifecycle.TTL_ENDED)
            return effects

        return self._future(op)

    async def cancel(
        self, *, task_id: int | None = None, agent_id: str | None = None, tag: str | None = None,
        selector: str | None = None, now: float,
    ) -> Effects[Untasked]:
        def op() -> Effects[Untasked]:
            effects: Effects[Untasked] = Effects(Untasked(0, 0))
            closed: list[int] = []
            untask = DeliveryEvent.UNTASK
            if task_id is not None and (agent_id, tag, selector) != (None, None, None):
                self._cancel_for(effects, task_id, agent_id, tag, selector, now)
            elif task_id is not None:
                if task_id not in self._tasks:
                    raise ProtocolError(ErrorCode.UNKNOWN_TASK, f"no task {task_id}")
                closed = self._close_tasks(TaskEvent.UNTASK, lambda t: task_id in (t.id, t.parent_id)
                                           and t.expires_at > now)
                family = {t.id for t in self._tasks.values() if task_id in (t.id, t.parent_id)}
                self._end(effects, lambda d: d.task_id in family, untask, now)  # with its polling sequels
            elif selector is not None:
                closed = self._close_tasks(TaskEvent.UNTASK, lambda t: t.selector == selector)
                chosen = self._selected(selector)
                self._end(effects, lambda d: d.agent_id in chosen, untask, now)
                self._end(effects, lambda d: self._tasks[d.task_id].selector == selector, untask, now)
            elif agent_id is not None:
                self._live(agent_id)
                self._end(effects, lambda d: d.agent_id == agent_id, untask, now)
            else:
                def aimed(t: TaskRecord) -> bool:
                    return t.target_kind == "tag" and t.target == tag

                carried = {a.id for a in self._agents.values() if tag in a.tags}
                if not carried and not any(aimed(t) and t.state == TaskState.ACTIVE for t in self._tasks.values()):
                    raise ProtocolError(ErrorCode.UNKNOWN_TAG,
                                        f"no agent carries tag {tag!r} and no task is aimed at it: nothing to cancel")
                closed = self._close_tasks(TaskEvent.UNTASK, aimed)
                self._end(effects, lambda d: d.agent_id in carried or aimed(self._tasks[d.task_id]), untask, now)
            if tag is None:  # a tag untask closes tag tasks only
                effects.unselected = closed
            effects.result = Untasked(len(effects.changes), len(closed))
            return effects

        return self._write(op)

    def _cancel_for(self, effects: Effects[Untasked], task_id: int, agent_id: str | None, tag: str | None,
                    selector: str | None, now: float) -> None:
        """Untask one task for some agents only; an agent not reached yet gets it cancelled."""
        task = self._tasks.get(task_id)
        if task is None:
            raise ProtocolError(ErrorCode.UNKNOWN_TASK, f"no task {task_id}")
        if agent_id is not None:
            self._live(agent_id)
            agents = [agent_id]
        elif tag is not None:
            agents = sorted(a.id for a in self._agents.values() if tag in a.tags)
        else:
            assert selector is not None
            agents = sorted(self._selected(selector))
        wanted = set(agents)
        self._end(effects, lambda d: d.task_id == task_id and d.agent_id in wanted, DeliveryEvent.UNTASK, now)
        unborn = lifecycle.end_by_daemon(0, BORN, DeliveryEvent.UNTASK, now)
        assert unborn.new is not None
        for a in agents:
            if (task_id, a) not in self._by_task_agent:
                self._deliver(task, a, now, unborn.new.value)
                d = self._deliveries[self._by_task_agent[task_id, a]]
                for name, value in unborn.columns.items():
                    setattr(d, name, value)

    async def tag_add(self, agent_id: str, tag: str, now: float) -> Effects[None]:
        def op() -> Effects[None]:
            agent = self._live(agent_id)
            if tag not in agent.tags:
                check_tag_count(len(agent.tags) + 1, whose=f"agent {agent_id}")
                agent.tags.add(tag)
            return Effects(None, items=self._materialise(agent, [tag], now, include_all=False)
                           + self._materialise_selected(agent, now))

        return self._write(op)

    async def tag_rm(self, agent_id: str, tag: str, now: float) -> Effects[None]:
        def op() -> Effects[None]:
            agent = self._live(agent_id)
            if tag not in agent.tags:
                raise ProtocolError(ErrorCode.UNKNOWN_TAG, f"agent {agent_id} does not carry tag {tag!r}")
            agent.tags.discard(tag)
            return Effects(None, items=self._materialise_selected(agent, now))  # e.g. not "staging" in tags

        return self._write(op)

    def select_for_agent(self, agent_id: str, hostname: str, platform: str,
                         now: float) -> asyncio.Future[Effects[None]]:
        def op() -> Effects[None]:
            agent = self._agents.get(agent_id)
            if agent is None:
                return Effects(None)
            agent.hostname, agent.platform = hostname, platform
            return Effects(None, items=self._materialise_selected(agent, now))

        return self._future(op)

    def _push_item(self, d: DeliveryRecord) -> PushItem:
        t = self._tasks[d.task_id]
        return PushItem(d.id, d.task_id, d.agent_id, t.command if d.command is None else d.command,
                        t.args if d.args is None else d.args, d.priority, t.expires_at, d.run,
                        d.poll_deadline or 0.0, d.poll_timeout or 0.0)

    async def pending_for_agent(
        self, agent_id: str, *, limit: int | None = None, after: PushItem | None = None
    ) -> list[PushItem]:
        def order(d: DeliveryRecord) -> tuple[int, int, int]:
            return -d.priority, d.task_id, d.id

        rows = sorted((d for d in self._deliveries.values() if d.agent_id == agent_id and d.state in PUSHABLE),
                      key=order)
        if after is not None:  # the rows that come after ``after`` in push order
            mark = (-after.priority, after.task_id, after.delivery_id)
            rows = [d for d in rows if order(d) > mark]
        return [self._push_item(d) for d in rows[:limit]]

    async def list_agents(self, tag: str | None, *, removed: bool = False) -> list[AgentView]:
        agents = [a for a in self._agents.values()
                  if (removed or (a.live and a.token_hash)) and (not tag or tag in a.tags)]  # not revoked nor replaced
        agents.sort(key=lambda a: (a.hostname, a.id))
        return [a.view() for a in agents]

    async def ended_by_daemon(self, agent_id: str, delivery_ids: list[int]) -> list[tuple[int, str]]:
        wanted = {d for d in delivery_ids if 0 <= d <= MAX_ID}
        return [(d.id, d.state) for d in sorted(self._deliveries.values(), key=lambda d: d.id)
                if d.id in wanted and d.agent_id == agent_id and d.ended_by == "daemon"]

    async def agent_commands(self, agent_id: str) -> list[str] | None:
        agent = self._agents.get(agent_id)
        if agent is None or not agent.live:
            return None
        commands: list[str] = unpack(agent.commands) or []
        return commands

    async def get_task(self, task_id: int, *, history: bool = False, now: float | None = None) -> TaskView | None:
        t = self._tasks.get(task_id)
        if t is None:
            return None
        schedule = self._schedules.get(t.schedule_id) if t.schedule_id is not None else None
        row = (t.id, t.command, t.args, t.target_kind, t.target, t.priority, t.ttl, t.created_at, t.expires_at,
               t.state, t.hide_polling_output, None if schedule is None else schedule.name, t.selector,
               t.investigation_id, t.delay, t.jitter)
        family = {x.id for x in self._tasks.values() if task_id in (x.id, x.parent_id)}
        deliveries = sorted((d for d in self._deliveries.values() if d.task_id in family), key=lambda d: d.id)
        entries = [e for d in deliveries for e in sorted(self._history.get(d.id, ()), key=lambda e: e[1])] \
            if history else None
        return views.task_view(row, [tuple(getattr(d, name) for name in views.DELIVERY) for d in deliveries],
                               entries, now)

    async def list_deliveries(
        self, *, agent_id: str | None, tag: str | None, states: list[str] | None, limit: int,
        selector: str | None = None,
    ) -> list[DeliveryRow]:
        chosen = None if selector is None else self._selected(selector)
        tagged = None if tag is None else {a.id for a in self._agents.values() if tag in a.tags}
        rows = [d for d in self._deliveries.values()
                if (agent_id is None or d.agent_id == agent_id) and (tagged is None or d.agent_id in tagged)
                and (states is None or d.state in states) and (chosen is None or d.agent_id in chosen)]
        rows.sort(key=lambda d: (-d.priority, d.task_id, d.id))
        out = []
        for d in rows[:limit]:
            t = self._tasks[d.task_id]
            out.append(views.delivery_row((t.id, d.id, d.agent_id, t.command, d.state, d.priority, t.created_at,
                                           t.expires_at, t.args, t.ttl, t.target_kind, t.target, t.selector,
                                           t.investigation_id)))
        return out

    async def timers(self) -> Effects[None]:
        effects: Effects[None] = Effects(None)
        active = [t for t in self._tasks.values() if t.state == TaskState.ACTIVE]
        unfinished = {d.task_id for d in self._deliveries.values() if d.state in PENDING}
        for t in active:
            if t.target_kind != "agent":
                effects.timers.append((Timer.EXPIRE, t.id, t.expires_at))
            elif t.id in unfinished:
                effects.timers.append((Timer.EXPIRE_ONE, t.id, t.expires_at))
            if t.selector is not None:
                effects.selecting.append((t.id, t.expires_at))
        for d in self._deliveries.values():
            if d.state == DeliveryState.DELAYED:
                assert d.next_run_at is not None
                effects.timers.append((Timer.POLL, d.id, min(d.next_run_at, self._tasks[d.task_id].expires_at)))
            if d.poll_deadline is None:
                continue
            if d.state == DeliveryState.WAITING:
                assert d.next_run_at is not None
                effects.timers.append((Timer.POLL, d.id, min(d.next_run_at, d.poll_deadline)))
            elif d.state in lifecycle.UNDELIVERED and d.run > 1:
                effects.timers.append((Timer.POLL, d.id, d.poll_deadline))
        effects.timers += [(Timer.SCHEDULE, s.id, s.next_fire_at) for s in self._schedules.values()
                           if not s.paused and s.next_fire_at is not None]
        return effects


def _is_a_store(store: MemoryStore) -> Store:
    """Where mypy checks that :class:`MemoryStore` keeps the :class:`~.Store` protocol."""
    return store
