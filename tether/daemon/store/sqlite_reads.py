"""The reading side of the SQLite store: what consoles and new sessions ask for.

Reads run on their own connection; WAL lets them proceed while the writer commits, and
they see only committed data.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import aiosqlite
import msgspec

from ...protocol.codec import unpack
from ...protocol.console import AgentView, DeliveryRow, DeliveryView, TaskView
from . import PushItem

_PUSH_COLUMNS = "d.id, d.task_id, d.agent_id, t.command, t.args, d.priority, t.expires_at, d.run"
_PUSHABLE = "('queued', 'sent', 'acked', 'running')"


class SQLiteReads:
    """Queries on the read connection ``_r``, which the store opens."""

    _r: aiosqlite.Connection | None

    async def _read(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        assert self._r is not None
        return list(await self._r.execute_fetchall(sql, tuple(params)))

    async def pending_for_agent(self, agent_id: str) -> list[PushItem]:
        rows = await self._read(
            f"SELECT {_PUSH_COLUMNS} FROM deliveries d JOIN tasks t ON t.id = d.task_id"
            f" WHERE d.agent_id = ? AND d.state IN {_PUSHABLE}"
            " ORDER BY d.priority DESC, d.task_id, d.id",
            (agent_id,),
        )
        return [PushItem(*r) for r in rows]

    async def list_agents(self, tag: str | None) -> list[AgentView]:
        where, params = ("WHERE a.id IN (SELECT agent_id FROM agent_tags WHERE tag = ?)", (tag,)) if tag else ("", ())
        rows = await self._read(
            "SELECT a.id, a.hostname, a.platform, a.enrolled_at, a.last_seen, a.commands,"
            " (SELECT group_concat(tag, char(0)) FROM agent_tags t WHERE t.agent_id = a.id)"
            f" FROM agents a {where} ORDER BY a.hostname, a.id",
            params,
        )
        return [
            AgentView(
                agent_id=r[0], hostname=r[1], platform=r[2], enrolled_at=r[3], last_seen=r[4],
                commands=unpack(r[5]) or [], tags=sorted(r[6].split("\0")) if r[6] else [], online=False,
            )
            for r in rows
        ]

    async def agent_commands(self, agent_id: str) -> list[str] | None:
        rows = await self._read("SELECT commands FROM agents WHERE id = ?", (agent_id,))
        if not rows:
            return None
        commands: list[str] = unpack(rows[0][0]) or []
        return commands

    async def get_task(self, task_id: int) -> TaskView | None:
        rows = await self._read(
            "SELECT id, command, args, target_kind, target, priority, ttl, created_at, expires_at, state"
            " FROM tasks WHERE id = ?", (task_id,),
        )
        if not rows:
            return None
        t = rows[0]
        deliveries = await self._read(
            "SELECT id, agent_id, state, updated_at, sent_at, acked_at, started_at, finished_at, progress,"
            " result, error FROM deliveries WHERE task_id = ? ORDER BY id", (task_id,),
        )
        return TaskView(
            task_id=t[0], command=t[1], args=unpack(t[2]), target="all" if t[3] == "all" else f"{t[3]}:{t[4]}",
            priority=t[5], ttl=t[6], created_at=t[7], expires_at=t[8], state=t[9],
            deliveries=[
                DeliveryView(
                    delivery_id=d[0], agent_id=d[1], state=d[2], updated_at=d[3], sent_at=d[4], acked_at=d[5],
                    started_at=d[6], finished_at=d[7], progress=d[8], result=_decode_result(d[9]), error=d[10],
                )
                for d in deliveries
            ],
        )

    async def list_deliveries(
        self, *, agent_id: str | None, tag: str | None, states: list[str] | None, limit: int
    ) -> list[DeliveryRow]:
        clauses, params = [], []
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
            "SELECT d.task_id, d.id, d.agent_id, t.command, d.state, d.priority, t.created_at, t.expires_at"
            f" FROM deliveries d JOIN tasks t ON t.id = d.task_id {where}"
            " ORDER BY d.priority DESC, d.task_id, d.id LIMIT ?",
            (*params, limit),
        )
        return [
            DeliveryRow(
                task_id=r[0], delivery_id=r[1], agent_id=r[2], command=r[3], state=r[4], priority=r[5],
                created_at=r[6], expires_at=r[7],
            )
            for r in rows
        ]

    async def active_expiries(self) -> list[tuple[int, float]]:
        return [(r[0], r[1]) for r in await self._read("SELECT id, expires_at FROM tasks WHERE state = 'active'")]



def _decode_result(blob: bytes | None) -> Any:
    try:
        return unpack(blob)
    except msgspec.DecodeError:
        return None
