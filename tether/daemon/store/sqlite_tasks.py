"""Creating tasks and their deliveries: one place for the console's tasks and a schedule's.

A task fans out into one delivery per target agent at once; tag and ``all`` tasks also
reach agents tagged or enrolled later (:func:`materialise`), each agent once
(``UNIQUE (task_id, agent_id)``).
"""

from __future__ import annotations

from typing import Any

from ...protocol.codec import pack
from ...protocol.errors import ErrorCode, ProtocolError
from . import NewTask, PushItem
from .writer import Tx


def check_target(tx: Tx, kind: str, target: str) -> None:
    """Refuse a target nobody can be: an unknown agent, or a tag no agent carries."""
    if kind == "agent" and not tx.one("SELECT 1 FROM agents WHERE id = ?", (target,)):
        raise ProtocolError(ErrorCode.UNKNOWN_AGENT, f"no agent with id {target!r}")
    if kind == "tag" and not tx.one("SELECT 1 FROM agent_tags WHERE tag = ?", (target,)):
        raise ProtocolError(ErrorCode.UNKNOWN_TAG, f"no agent carries tag {target!r} (add it with: tetherctl tag add)")


def insert_task(tx: Tx, task: NewTask, now: float) -> tuple[int, float, list[PushItem]]:
    """Insert the task and its deliveries; return its id, expiry and what to push."""
    args = pack(task.args)
    expires_at = now + task.ttl
    task_id = tx.execute(
        "INSERT INTO tasks (command, args, target_kind, target, priority, ttl, created_at, expires_at,"
        " hide_polling_output, schedule_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (task.command, args, task.target_kind, task.target, task.priority, task.ttl, now, expires_at,
         int(task.hide_polling_output), task.schedule_id),
    ).lastrowid
    assert task_id is not None
    params: tuple[Any, ...]
    if task.target_kind == "agent":
        source, params = "SELECT id AS a FROM agents WHERE id = ?", (task.target,)
    elif task.target_kind == "tag":
        source, params = "SELECT agent_id AS a FROM agent_tags WHERE tag = ?", (task.target,)
    else:
        source, params = "SELECT id AS a FROM agents", ()
    rows = tx.execute(
        "INSERT INTO deliveries (task_id, agent_id, state, priority, updated_at)"
        f" SELECT ?, x.a, 'queued', ?, ? FROM ({source}) AS x WHERE true RETURNING id, agent_id",
        (task_id, task.priority, now, *params),
    ).fetchall()
    tx.entered["queued"] += len(rows)
    items = [PushItem(d_id, task_id, a_id, task.command, args, task.priority, expires_at) for d_id, a_id in rows]
    return task_id, expires_at, items


def materialise(tx: Tx, agent_id: str, tags: list[str], now: float, *, include_all: bool = True) -> list[PushItem]:
    """Give an agent (newly enrolled or tagged) the still-active tasks aimed at its tags
    or at all agents: each agent gets each task once (UNIQUE(task_id, agent_id))."""
    marks = ",".join("?" * len(tags))
    conds = []
    if tags:
        conds.append(f"(target_kind = 'tag' AND target IN ({marks}))")
    if include_all:
        conds.append("target_kind = 'all'")
    if not conds:
        return []
    rows = tx.execute(
        "INSERT OR IGNORE INTO deliveries (task_id, agent_id, state, priority, updated_at)"
        f" SELECT id, ?, 'queued', priority, ? FROM tasks WHERE state = 'active' AND expires_at > ?"
        f" AND ({' OR '.join(conds)}) RETURNING id, task_id",
        (agent_id, now, now, *tags),
    ).fetchall()
    tx.entered["queued"] += len(rows)
    items = []
    for d_id, task_id in rows:
        command, args, priority, expires_at = tx.one(
            "SELECT command, args, priority, expires_at FROM tasks WHERE id = ?", (task_id,)
        )
        items.append(PushItem(d_id, task_id, agent_id, command, args, priority, expires_at))
    return items
