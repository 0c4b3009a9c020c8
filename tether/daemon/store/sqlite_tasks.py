"""Creating tasks and their deliveries: one place for the console's tasks and a schedule's.

A task fans out into one delivery per target agent at once; tag and ``all`` tasks also
reach agents tagged or enrolled later (:func:`materialise`), each agent once
(``UNIQUE (task_id, agent_id)``).
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Any

import msgspec

from ...protocol.codec import pack
from ...protocol.errors import ErrorCode, ProtocolError
from ...protocol.lifecycle import BORN, DeliveryState, TaskState, born, sql_value
from ...protocol.selectors import Facts
from ..effects import Effects, PushItem, Timer
from . import NewTask
from .rules import selector
from .writer import Tx, chunks

ACTIVE = sql_value(TaskState.ACTIVE)
"""The state of a task that still reaches agents that come to match its target."""

LIVE = "removed_at IS NULL"
"""The agents a task, a listing or a login can name: not removed (``agent.rm``) or merged
into another (``agent.merge``); their rows stay for their deliveries' history."""


def check_agent(tx: Tx, agent_id: str) -> None:
    """Refuse an agent id no live agent has."""
    if not tx.one(f"SELECT 1 FROM agents WHERE id = ? AND {LIVE}", (agent_id,)):
        raise ProtocolError(ErrorCode.UNKNOWN_AGENT, f"no agent with id {agent_id!r}")


def agent_facts(tx: Tx, agent_ids: Iterable[str]) -> list[Facts]:
    """What selectors are evaluated against, for these agents (those that exist)."""
    facts: list[Facts] = []
    for chunk in chunks(list(agent_ids)):
        marks = ",".join("?" * len(chunk))
        tags: dict[str, set[str]] = {}
        for agent_id, tag in tx.execute(f"SELECT agent_id, tag FROM agent_tags WHERE agent_id IN ({marks})", chunk):
            tags.setdefault(agent_id, set()).add(tag)
        facts += [Facts(sid=a, hostname=h, platform=p, tags=frozenset(tags.get(a, ())))
                  for a, h, p in tx.execute(f"SELECT id, hostname, platform FROM agents WHERE id IN ({marks}) AND {LIVE}", chunk)]
    return facts


def all_facts(tx: Tx) -> list[Facts]:
    """Every enrolled agent's facts (a selector task being created, a selector untask)."""
    tags: dict[str, set[str]] = {}
    for agent_id, tag in tx.execute("SELECT agent_id, tag FROM agent_tags"):
        tags.setdefault(agent_id, set()).add(tag)
    return [Facts(sid=a, hostname=h, platform=p, tags=frozenset(tags.get(a, ())))
            for a, h, p in tx.execute(f"SELECT id, hostname, platform FROM agents WHERE {LIVE}")]


def check_target(tx: Tx, kind: str, target: str) -> None:
    """Refuse a target nobody can be: an unknown agent. A tag no agent carries yet is a
    target (agents tagged or enrolled with it later get the task)."""
    if kind == "agent":
        check_agent(tx, target)


def insert_task(tx: Tx, task: NewTask, now: float) -> Effects[int]:
    """Insert the task and its deliveries: its id, what to push, its ttl timer (one that
    only its one delivery's end clears, for a task for one agent), and a selector task's
    selecting."""
    args = pack(task.args)
    expires_at = now + task.ttl
    task_id = tx.execute(
        "INSERT INTO tasks (command, args, target_kind, target, priority, ttl, created_at, expires_at,"
        " hide_polling_output, schedule_id, selector, investigation_id, delay, jitter)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (task.command, args, task.target_kind, task.target, task.priority, task.ttl, now, expires_at,
         int(task.hide_polling_output), task.schedule_id, task.selector, task.investigation_id, task.delay,
         task.jitter),
    ).lastrowid
    assert task_id is not None
    ttl = Timer.EXPIRE_ONE if task.target_kind == "agent" else Timer.EXPIRE
    effects = Effects(task_id, timers=[(ttl, task_id, expires_at)])
    params: tuple[Any, ...]
    if task.selector is not None:
        match = selector(task.selector)
        chosen = [f.sid for f in all_facts(tx) if match(f)]
        for chunk in chunks(chosen):
            rows = tx.execute(
                "INSERT INTO deliveries (task_id, agent_id, state, priority, updated_at)"
                f" SELECT ?, id, ?, ?, ? FROM agents WHERE id IN ({','.join('?' * len(chunk))}) AND {LIVE}"
                " RETURNING id, agent_id", (task_id, BORN.value, task.priority, now, *chunk)).fetchall()
            effects.items += [PushItem(d_id, task_id, a_id, task.command, args, task.priority, expires_at)
                              for d_id, a_id in rows]
        tx.born(BORN, len(effects.items))
        effects.items = hold(tx, effects.items, now, task.delay, task.jitter, now)
        effects.selecting.append((task_id, expires_at))
        return effects
    if task.target_kind == "agent":
        source, params = f"SELECT id AS a FROM agents WHERE id = ? AND {LIVE}", (task.target,)
    elif task.target_kind == "tag":
        source, params = "SELECT agent_id AS a FROM agent_tags WHERE tag = ?", (task.target,)
    else:
        source, params = f"SELECT id AS a FROM agents WHERE {LIVE}", ()
    rows = tx.execute(
        "INSERT INTO deliveries (task_id, agent_id, state, priority, updated_at)"
        f" SELECT ?, x.a, ?, ?, ? FROM ({source}) AS x WHERE true RETURNING id, agent_id",
        (task_id, BORN.value, task.priority, now, *params),
    ).fetchall()
    tx.born(BORN, len(rows))
    effects.items = hold(tx, [PushItem(d_id, task_id, a_id, task.command, args, task.priority, expires_at)
                              for d_id, a_id in rows], now, task.delay, task.jitter, now)
    return effects


def hold(tx: Tx, items: list[PushItem], created_at: float, delay: float, jitter: float,
         now: float) -> list[PushItem]:
    """The deliveries of a task with a delay or a jitter, just inserted: each whose time
    (``created_at + delay`` plus 0 to ``jitter``, drawn for its agent) is still to come is
    born ``delayed`` instead, its time kept (``next_run_at``) and carried by its item, so
    that it gets a timer, not a push."""
    if not (delay or jitter):
        return items
    out, held = [], []
    for item in items:
        not_before = created_at + delay + random.uniform(0.0, jitter)
        if born(not_before, now) is DeliveryState.DELAYED:
            held.append((DeliveryState.DELAYED.value, not_before, item.delivery_id))
            item = msgspec.structs.replace(item, not_before=not_before)
        out.append(item)
    if held:
        tx.conn.executemany("UPDATE deliveries SET state = ?, next_run_at = ? WHERE id = ?", held)
        tx.born(BORN, -len(held))
        tx.born(DeliveryState.DELAYED, len(held))
    return out


def materialise(tx: Tx, agent_id: str, tags: list[str], now: float, *, include_all: bool = True) -> list[PushItem]:
    """Give an agent (newly enrolled or tagged) the still-active tasks aimed at its tags
    or at all agents: each agent gets each task once (UNIQUE(task_id, agent_id))."""
    marks = ",".join("?" * len(tags))
    conds = []
    if tags:
        conds.append(f"(target_kind = 'tag' AND target IN ({marks}))")
    if include_all:
        conds.append("(target_kind = 'all' AND selector IS NULL)")
    if not conds:
        return []
    rows = tx.execute(
        "INSERT OR IGNORE INTO deliveries (task_id, agent_id, state, priority, updated_at)"
        f" SELECT id, ?, ?, priority, ? FROM tasks WHERE state = {ACTIVE} AND expires_at > ?"
        f" AND ({' OR '.join(conds)}) RETURNING id, task_id",
        (agent_id, BORN.value, now, now, *tags),
    ).fetchall()
    tx.born(BORN, len(rows))
    items = []
    for d_id, task_id in rows:
        command, args, priority, expires_at, created_at, delay, jitter = tx.one(
            "SELECT command, args, priority, expires_at, created_at, delay, jitter FROM tasks WHERE id = ?",
            (task_id,)
        )
        items += hold(tx, [PushItem(d_id, task_id, agent_id, command, args, priority, expires_at)], created_at,
                      delay, jitter, now)
    return items


def materialise_selected(tx: Tx, agent_id: str, now: float) -> list[PushItem]:
    """Give an agent (newly enrolled, tagged, untagged or with new facts from its hello) the
    active selector tasks it matches now and has not received: each agent gets each task
    once, as for tag tasks. Costs one indexed read when no selector task is active."""
    tasks = tx.execute(
        "SELECT id, selector, command, args, priority, expires_at, created_at, delay, jitter FROM tasks"
        f" WHERE selector IS NOT NULL AND state = {ACTIVE} AND expires_at > ?", (now,)).fetchall()
    if not tasks:
        return []
    facts = agent_facts(tx, [agent_id])
    if not facts:
        return []
    items = []
    for task_id, text, command, args, priority, expires_at, created_at, delay, jitter in tasks:
        if not selector(text)(facts[0]):
            continue
        row = tx.one("INSERT OR IGNORE INTO deliveries (task_id, agent_id, state, priority, updated_at)"
                     " VALUES (?, ?, ?, ?, ?) RETURNING id", (task_id, agent_id, BORN.value, priority, now))
        if row is not None:
            tx.born(BORN, 1)
            items += hold(tx, [PushItem(row[0], task_id, agent_id, command, args, priority, expires_at)],
                          created_at, delay, jitter, now)
    return items
