"""The in-memory store's tables (:mod:`.memory`): rows in dicts, and what every part of it
does with them (a write run whole, a decision applied, a delivery made, an agent found).
"""

from __future__ import annotations

import asyncio
import collections
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ...protocol import lifecycle
from ...protocol.codec import pack
from ...protocol.console import AgentView
from ...protocol.errors import ErrorCode, ProtocolError
from ...protocol.lifecycle import (
    BORN,
    TASK,
    Decision,
    DeliveryEvent,
    DeliveryState,
    TaskEvent,
    TaskState,
    born,
)
from ...protocol.selectors import Facts
from ..effects import Change, Effects, PushItem, Timer
from . import (
    NewTask,
    StoreError,
    Timing,
    views,
)
from .rules import selector as compiled_selector

T = TypeVar("T")


@dataclass(slots=True)
class AgentRecord:
    id: str
    token_hash: bytes
    machine_uuid: str
    hostname: str
    platform: str
    enrolled_at: float
    clone_of: str | None = None
    cert_sha256: bytes | None = None
    tags: set[str] = field(default_factory=set)
    agent_version: str = ""
    commands: bytes | None = None
    last_seen: float | None = None
    removed_at: float | None = None
    merged_into: str | None = None
    replaced_by: str | None = None
    config_hash: str | None = None
    """The hash of the configuration it last reported."""
    config_at: float | None = None
    config_error: str = ""

    @property
    def live(self) -> bool:
        return self.removed_at is None

    def facts(self) -> Facts:
        return Facts(sid=self.id, hostname=self.hostname, platform=self.platform, tags=frozenset(self.tags))

    def view(self) -> AgentView:
        return views.agent_view((self.id, self.hostname, self.platform, self.enrolled_at, self.last_seen,
                                 self.commands, list(self.tags), not self.token_hash, self.clone_of, self.removed_at,
                                 self.merged_into, self.replaced_by))


@dataclass(slots=True)
class TokenRecord:
    id: int
    token_hash: bytes
    role: str
    label: str
    created_at: float
    revoked_at: float | None = None


@dataclass(slots=True)
class KeyRecord:
    id: int
    key_hash: bytes
    tags: list[str]
    created_at: float
    expires_at: float | None
    uses_left: int | None
    allow_requested_tags: bool = False
    revoked_at: float | None = None


@dataclass(slots=True)
class TaskRecord:
    id: int
    command: str
    args: bytes
    target_kind: str
    target: str
    priority: int
    ttl: int
    created_at: float
    expires_at: float
    hide_polling_output: bool = False
    schedule_id: int | None = None
    selector: str | None = None
    investigation_id: str = ""
    parent_id: int | None = None
    state: str = TaskState.ACTIVE.value
    delay: float = 0.0
    jitter: float = 0.0


@dataclass(slots=True)
class DeliveryRecord:
    id: int
    task_id: int
    agent_id: str
    state: str
    priority: int
    updated_at: float
    run: int = 1
    sent_at: float | None = None
    acked_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    progress: str = ""
    result: bytes | None = None
    error: str = ""
    command: str | None = None
    args: bytes | None = None
    next_run_at: float | None = None
    poll_deadline: float | None = None
    poll_timeout: float | None = None
    ended_by: str | None = None


@dataclass(slots=True)
class ScheduleRecord:
    id: int
    name: str
    command: str
    args: bytes
    target_kind: str
    target: str
    every: float | None
    cron: str | None
    timezone: str
    ttl: int
    priority: int
    hide_polling_output: bool
    missed: str
    created_at: float
    anchor: float
    next_fire_at: float | None
    paused: bool = False
    last_fire_at: float | None = None
    fired: int = 0
    missed_total: int = 0
    skipped: int = 0

    def row(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in views.SCHEDULE)

    def timing(self) -> Timing:
        return Timing(every=self.every, cron=self.cron, timezone=self.timezone, anchor=self.anchor)


def next_id(table: dict[int, Any]) -> int:
    """As SQLite hands out an INTEGER PRIMARY KEY: one more than the largest in use."""
    return max(table, default=0) + 1


def finite(when: float) -> float | None:
    return None if when == float("inf") else when


class MemoryTables:
    """The tables, and the steps the store's writes are made of."""

    def __init__(self) -> None:
        self._open = False
        self._agents: dict[str, AgentRecord] = {}
        self._tokens: dict[int, TokenRecord] = {}
        self._keys: dict[int, KeyRecord] = {}
        self._tasks: dict[int, TaskRecord] = {}
        self._deliveries: dict[int, DeliveryRecord] = {}
        self._by_task_agent: dict[tuple[int, str], int] = {}
        self._history: dict[int, list[tuple[Any, ...]]] = collections.defaultdict(list)
        self._schedules: dict[int, ScheduleRecord] = {}
        self._states: dict[str, tuple[bytes, float]] = {}
        self._config_layers: dict[tuple[str, str], dict[str, Any]] = {}
        """(scope, tag or agent id) -> the keys that layer sets."""
        self._config_blobs: dict[str, bytes] = {}
        """Each distinct reported configuration, once, by its hash."""
        """Each agent's latest state report (MessagePack) and when it came."""
        self._state_history: dict[str, list[tuple[float, str, bytes, bytes]]] = collections.defaultdict(list)
        """Each agent's state changes, oldest first: (at, fact, old, new)."""
        self._entered: collections.Counter[str] = collections.Counter()
        self._writes = 0

    def _check_open(self) -> None:
        if not self._open:
            raise StoreError("the store is closed")

    def _write(self, op: Callable[[], T]) -> T:
        self._check_open()
        self._writes += 1
        return op()

    def _future(self, op: Callable[[], T]) -> asyncio.Future[T]:
        """A write whose caller reacts on commit: done at once, its answer in a future."""
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        try:
            fut.set_result(self._write(op))
        except (ProtocolError, StoreError) as exc:
            fut.set_exception(exc)
        return fut

    def _live(self, agent_id: str) -> AgentRecord:
        """The live agent of that id; refused as unknown otherwise."""
        agent = self._agents.get(agent_id)
        if agent is None or not agent.live:
            raise ProtocolError(ErrorCode.UNKNOWN_AGENT, f"no agent with id {agent_id!r}")
        return agent

    def _insert_task(self, task: NewTask, now: float) -> Effects[int]:
        """The task, and its deliveries to the agents it targets now (as SQLite orders them)."""
        row = TaskRecord(next_id(self._tasks), task.command, pack(task.args), task.target_kind, task.target,
                    task.priority, task.ttl, now, now + task.ttl, task.hide_polling_output, task.schedule_id,
                    task.selector, task.investigation_id)
        row.delay, row.jitter = task.delay, task.jitter
        self._tasks[row.id] = row
        ttl = Timer.EXPIRE_ONE if task.target_kind == "agent" else Timer.EXPIRE
        effects = Effects(row.id, timers=[(ttl, row.id, row.expires_at)])
        live = [a for a in self._agents.values() if a.live]
        if task.selector is not None:
            match = compiled_selector(task.selector)
            agents = sorted((a for a in live if match(a.facts())), key=lambda a: a.id)
            effects.selecting.append((row.id, row.expires_at))
        elif task.target_kind == "agent":
            agents = [a for a in live if a.id == task.target]
        elif task.target_kind == "tag":
            agents = sorted((a for a in live if task.target in a.tags), key=lambda a: a.id)
        else:
            agents = live
        effects.items = [self._deliver(row, agent.id, now) for agent in agents]
        return effects

    def _deliver(self, task: TaskRecord, agent_id: str, now: float, state: str = BORN.value) -> PushItem:
        """A delivery of the task to the agent, born ``state``; what to push of it."""
        not_before = 0.0
        if state == BORN and (task.delay or task.jitter):  # as SQLite's store.sqlite_tasks.hold
            drawn = task.created_at + task.delay + random.uniform(0.0, task.jitter)
            if born(drawn, now) is DeliveryState.DELAYED:
                state, not_before = DeliveryState.DELAYED.value, drawn
        d = DeliveryRecord(next_id(self._deliveries), task.id, agent_id, state, task.priority, now)
        d.next_run_at = not_before or None
        self._deliveries[d.id] = d
        self._by_task_agent[task.id, agent_id] = d.id
        if state == BORN or not_before:
            self._entered[state] += 1
        return PushItem(d.id, task.id, agent_id, task.command, task.args, task.priority, task.expires_at,
                        not_before=not_before)

    def _reaching(self, now: float) -> list[TaskRecord]:
        """The tasks that still reach agents that come to match their target, by id."""
        return [t for t in self._tasks.values() if t.state == TaskState.ACTIVE and t.expires_at > now]

    def _materialise(self, agent: AgentRecord, tags: Iterable[str], now: float, *,
                     include_all: bool = True) -> list[PushItem]:
        """The active tasks aimed at the agent's tags (or at all agents) it had not received."""
        wanted = set(tags)
        return [self._deliver(t, agent.id, now) for t in self._reaching(now)
                if ((t.target_kind == "tag" and t.target in wanted)
                    or (include_all and t.target_kind == "all" and t.selector is None))
                and (t.id, agent.id) not in self._by_task_agent]

    def _materialise_selected(self, agent: AgentRecord, now: float) -> list[PushItem]:
        """The active selector tasks the agent matches now and had not received."""
        tasks = sorted((t for t in self._reaching(now) if t.selector is not None), key=lambda t: (t.expires_at, t.id))
        if not tasks or not agent.live:
            return []
        facts = agent.facts()
        return [self._deliver(t, agent.id, now) for t in tasks
                if compiled_selector(t.selector or "")(facts) and (t.id, agent.id) not in self._by_task_agent]

    def _apply(self, d: DeliveryRecord, decision: Decision, now: float) -> None:
        """Write a lifecycle decision about a delivery (nothing if it ignores the event)."""
        if decision.new is None:
            return
        d.state, d.updated_at = decision.new.value, now
        for name, value in decision.columns.items():
            setattr(d, name, value)
        if decision.history is not None:
            self._add_history(d.id, decision.history)
        if decision.moves:
            self._entered[decision.new] += 1

    def _add_history(self, delivery_id: int, h: lifecycle.HistoryRow) -> None:
        self._history[delivery_id].append((delivery_id, h.run, h.at, h.partial, h.poll_message, h.note, h.next_run_at,
                                           h.next_command, h.next_args, h.items_remaining))

    def _end(self, effects: Effects[Any], which: Callable[[DeliveryRecord], bool], event: DeliveryEvent, now: float,
             error: str = "") -> None:
        """End the deliveries that match, as the daemon's own decision (ttl, untask)."""
        olds = lifecycle.moves(lifecycle.DELIVERY, event)[0]
        for d in [d for d in self._deliveries.values() if d.state in olds and which(d)]:
            decision = lifecycle.end_by_daemon(d.id, d.state, event, now, error)
            self._apply(d, decision, now)
            assert decision.new is not None
            effects.changes.append(Change(d.id, d.task_id, d.agent_id, decision.old, decision.new))
            if decision.withdraw is not None:
                effects.withdraws.append((d.agent_id, d.id, decision.withdraw))

    def _close_tasks(self, event: TaskEvent, which: Callable[[TaskRecord], bool]) -> list[int]:
        olds, new = lifecycle.moves(TASK, event)
        closed = [t for t in self._tasks.values() if t.state in olds and which(t)]
        for t in closed:
            t.state = new.value
        return [t.id for t in closed]

    def _selected(self, text: str) -> set[str]:
        match = compiled_selector(text)
        return {a.id for a in self._agents.values() if a.live and match(a.facts())}
