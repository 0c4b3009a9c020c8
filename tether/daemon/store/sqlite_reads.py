"""The reading side of the SQLite store: what consoles and new sessions ask for.

Reads run on their own connection; WAL lets them proceed while the writer commits, and
they see only committed data.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import aiosqlite

from ...protocol.codec import unpack
from ...protocol.console import AgentView, DeliveryRow, TaskView
from ...protocol.lifecycle import (
    PENDING,
    PUSHABLE,
    UNDELIVERED,
    DeliveryState,
    sql_in,
    sql_value,
)
from ...protocol.selectors import Facts
from ..effects import Effects, PushItem, Timer
from . import views
from .rules import MAX_ID
from .rules import selector as compiled_selector
from .sqlite_tasks import ACTIVE, LIVE
from .writer import chunks

_PUSH_COLUMNS = (
    "d.id, d.task_id, d.agent_id, COALESCE(d.command, t.command), COALESCE(d.args, t.args), d.priority,"
    " t.expires_at, d.run, COALESCE(d.poll_deadline, 0.0), COALESCE(d.poll_timeout, 0.0)"
)

AGENT_COLUMNS = ("a.id, a.hostname, a.platform, a.enrolled_at, a.last_seen, a.commands,"
                 " (SELECT group_concat(tag, char(0)) FROM agent_tags t WHERE t.agent_id = a.id),"
                 " length(a.token_hash) = 0, a.clone_of, a.removed_at, a.merged_into, a.replaced_by")
"""An agent as :func:`agent_view` reads it (``tags`` joined by NUL)."""


def agent_view(r: Any) -> AgentView:
    return views.agent_view((*r[:6], r[6].split("\0") if r[6] else [], *r[7:]))


class SQLiteReads:
    """Queries on the read connection ``_r``, which the store opens."""

    _r: aiosqlite.Connection | None

    async def _read(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        assert self._r is not None
        return list(await self._r.execute_fetchall(sql, tuple(params)))

    async def pending_for_agent(
        self, agent_id: str, *, limit: int | None = None, after: PushItem | None = None
    ) -> list[PushItem]:
        where = ""
        params: list[Any] = [agent_id]
        if after is not None:  # the rows that come after ``after`` in push order (keyset paging)
            where = " AND (d.priority < ? OR (d.priority = ? AND (d.task_id > ? OR (d.task_id = ? AND d.id > ?))))"
            params += [after.priority, after.priority, after.task_id, after.task_id, after.delivery_id]
        rows = await self._read(
            f"SELECT {_PUSH_COLUMNS} FROM deliveries d JOIN tasks t ON t.id = d.task_id"
            f" WHERE d.agent_id = ? AND d.state IN {sql_in(PUSHABLE)}{where}"
            " ORDER BY d.priority DESC, d.task_id, d.id" + ("" if limit is None else " LIMIT ?"),
            params if limit is None else [*params, limit],
        )
        return [PushItem(*r) for r in rows]

    async def list_agents(self, tag: str | None, *, removed: bool = False) -> list[AgentView]:
        conds: list[str] = [] if removed else [LIVE, "length(a.token_hash) > 0"]  # not revoked nor replaced
        params: tuple[str, ...] = ()
        if tag:
            conds.append("a.id IN (SELECT agent_id FROM agent_tags WHERE tag = ?)")
            params = (tag,)
        where = f"WHERE {' AND '.join(conds)}" if conds else ""
        rows = await self._read(f"SELECT {AGENT_COLUMNS} FROM agents a {where} ORDER BY a.hostname, a.id", params)
        return [agent_view(r) for r in rows]

    async def ended_by_daemon(self, agent_id: str, delivery_ids: list[int]) -> list[tuple[int, str]]:
        ended: list[tuple[int, str]] = []
        for chunk in chunks([d for d in delivery_ids if 0 <= d <= MAX_ID]):
            ended += [(r[0], r[1]) for r in await self._read(
                f"SELECT id, state FROM deliveries WHERE id IN ({','.join('?' * len(chunk))}) AND agent_id = ?"
                " AND ended_by = 'daemon'", (*chunk, agent_id),
            )]
        return ended

    async def _selecting(self) -> list[tuple[int, float]]:
        """(task_id, expires_at) of every active selector task."""
        rows = await self._read(f"SELECT id, expires_at FROM tasks WHERE selector IS NOT NULL AND state = {ACTIVE}")
        return [(r[0], r[1]) for r in rows]

    async def agent_commands(self, agent_id: str) -> list[str] | None:
        rows = await self._read(f"SELECT commands FROM agents WHERE id = ? AND {LIVE}", (agent_id,))
        if not rows:
            return None
        commands: list[str] = unpack(rows[0][0]) or []
        return commands

    async def get_task(self, task_id: int, *, history: bool = False, now: float | None = None) -> TaskView | None:
        rows = await self._read(
            "SELECT t.id, t.command, t.args, t.target_kind, t.target, t.priority, t.ttl, t.created_at, t.expires_at,"
            " t.state, t.hide_polling_output, s.name, t.selector, t.investigation_id, t.delay, t.jitter"
            " FROM tasks t LEFT JOIN schedules s ON s.id = t.schedule_id"
            " WHERE t.id = ?", (task_id,),
        )
        if not rows:
            return None
        t = rows[0]
        deliveries = await self._read(
            "SELECT id, agent_id, state, updated_at, sent_at, acked_at, started_at, finished_at, progress,"
            " result, error, run, next_run_at, poll_deadline, ended_by, task_id, command, args FROM deliveries"
            " WHERE task_id IN (SELECT ? UNION ALL SELECT id FROM tasks WHERE parent_id = ?) ORDER BY id",
            (task_id, task_id),
        )
        entries: list[Any] | None = None
        if history:
            entries = []
            for chunk in chunks([d[0] for d in deliveries]):
                entries += await self._read(
                    "SELECT delivery_id, run, at, partial, poll_message, note, next_run_at, next_command, next_args,"
                    " items_remaining FROM history"
                    f" WHERE delivery_id IN ({','.join('?' * len(chunk))}) ORDER BY delivery_id, run, id", chunk)
        return views.task_view(t, deliveries, entries, now)

    async def list_deliveries(
        self, *, agent_id: str | None, tag: str | None, states: list[str] | None, limit: int,
        selector: str | None = None,
    ) -> list[DeliveryRow]:
        clauses: list[str] = []
        params: list[Any] = []
        chosen: set[str] | None = None
        if selector is not None:  # filtered below: a fleet can be more agents than SQL parameters
            match = compiled_selector(selector)
            chosen = {f.sid for f in await self._facts() if match(f)}
            if not chosen:
                return []
        if agent_id is not None:
            clauses.append("d.agent_id = ?")
            params.append(agent_id)
        if tag is not None:
            clauses.append("d.agent_id IN (SELECT agent_id FROM agent_tags WHERE tag = ?)")
            params.append(tag)
        if states is not None:
            clauses.append(f"d.state IN ({','.join('?' * len(states))})")
            params.extend(states)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = await self._read(
            "SELECT d.task_id, d.id, d.agent_id, t.command, d.state, d.priority, t.created_at, t.expires_at,"
            " t.args, t.ttl, t.target_kind, t.target, t.selector, t.investigation_id"
            f" FROM deliveries d JOIN tasks t ON t.id = d.task_id {where}"
            " ORDER BY d.priority DESC, d.task_id, d.id LIMIT ?",
            (*params, limit if chosen is None else -1),
        )
        out: list[DeliveryRow] = []
        for r in rows:
            if chosen is not None and r[2] not in chosen:
                continue
            if len(out) == limit:
                break
            out.append(views.delivery_row(r))
        return out

    async def _facts(self) -> list[Facts]:
        tags: dict[str, set[str]] = {}
        for agent_id, tag in await self._read("SELECT agent_id, tag FROM agent_tags"):
            tags.setdefault(agent_id, set()).add(tag)
        return [Facts(sid=a, hostname=h, platform=p, tags=frozenset(tags.get(a, ())))
                for a, h, p in await self._read(f"SELECT id, hostname, platform FROM agents WHERE {LIVE}")]

    async def timers(self) -> Effects[None]:
        # A task that can still change: a tag, selector or all task until its ttl, a task
        # for one agent while its delivery is unfinished (then its end clears the timer).
        expiries = await self._read(
            f"SELECT t.id, t.expires_at, t.target_kind = 'agent' FROM tasks t WHERE t.state = {ACTIVE}"
            " AND (t.target_kind != 'agent' OR EXISTS (SELECT 1 FROM deliveries d WHERE d.task_id = t.id"
            f" AND d.state IN {sql_in(PENDING)}))")
        # A waiting delivery's next run (or its sequence's timeout); a next run not yet
        # acknowledged, its sequence's timeout (lifecycle.poll_due).
        waiting = sql_value(DeliveryState.WAITING)
        polls = await self._read(
            f"SELECT id, CASE WHEN state = {waiting} THEN min(next_run_at, poll_deadline) ELSE poll_deadline END"
            " FROM deliveries WHERE poll_deadline IS NOT NULL"
            f" AND (state = {waiting} OR (state IN {sql_in(UNDELIVERED)} AND run > 1))"
        )
        # A delayed delivery's time (or its task's ttl, which ends it first).
        delayed = await self._read(
            "SELECT d.id, min(d.next_run_at, t.expires_at) FROM deliveries d JOIN tasks t ON t.id = d.task_id"
            f" WHERE d.state = {sql_value(DeliveryState.DELAYED)}")
        schedules = await self._read(
            "SELECT id, next_fire_at FROM schedules WHERE paused = 0 AND next_fire_at IS NOT NULL")
        return Effects(None, timers=[
            *((Timer.EXPIRE_ONE if one else Timer.EXPIRE, task_id, when) for task_id, when, one in expiries),
            *((Timer.POLL, d_id, when) for d_id, when in polls),
            *((Timer.POLL, d_id, when) for d_id, when in delayed),
            *((Timer.SCHEDULE, s_id, when) for s_id, when in schedules),
        ], selecting=await self._selecting())
