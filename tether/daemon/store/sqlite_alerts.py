"""Alerts in the SQLite store: one row per distinct alert (its checksum unique), and one
per agent counting the alerts it sent beyond its rate limit.

A copy of a known alert is one ``INSERT ... ON CONFLICT DO UPDATE`` that counts it and
keeps it as the latest copy: 10,000 copies are one row whose count is 10,000, and a copy
costs one statement in a group commit whatever the table holds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ...protocol.alerts import AlertDrops, AlertList, AlertView
from ...protocol.codec import pack
from ...protocol.errors import ErrorCode, ProtocolError
from ..effects import Effects
from . import AlertIn, AlertRecorded, views
from .writer import Op, Tx

_RECORD = (
    "INSERT INTO alerts (checksum, agent_id, kind, name, path, hash, severity, message, count, first_seen,"
    " last_seen, details, raised_at, delivery_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?)"
    " ON CONFLICT (checksum) DO UPDATE SET agent_id = excluded.agent_id, kind = excluded.kind,"
    " name = excluded.name, path = excluded.path, hash = excluded.hash, severity = excluded.severity,"
    " message = excluded.message, count = count + 1, last_seen = excluded.last_seen,"
    " details = excluded.details, raised_at = excluded.raised_at, delivery_id = excluded.delivery_id"
    " RETURNING id, count"
)
_DROPS = (
    "INSERT INTO alert_drops (agent_id, dropped, last_at) VALUES (?, ?, ?) ON CONFLICT (agent_id)"
    " DO UPDATE SET dropped = dropped + excluded.dropped, last_at = excluded.last_at"
)


def record(tx: Tx, agent_id: str, alerts: list[AlertIn], dropped: int, now: float) -> Effects[list[AlertRecorded]]:
    recorded = []
    for a in alerts:
        b = a.body
        alert_id, count = tx.one(_RECORD, (a.checksum, agent_id, b.kind, b.name, b.path, b.hash, b.severity,
                                           b.message, now, now, pack(b.details) if b.details else None,
                                           a.raised_at, a.delivery_id))
        recorded.append(AlertRecorded(alert_id=alert_id, agent_id=agent_id, new=count == 1, count=count,
                                      kind=b.kind, name=b.name, severity=b.severity))
    if dropped:
        tx.execute(_DROPS, (agent_id, dropped, now))
    return Effects(recorded)


class SQLiteAlerts:
    """Mixed into :class:`~.sqlite.SQLiteStore`, which provides ``_submit`` and ``_read``."""

    _submit: Callable[[Op], asyncio.Future[Any]]
    if TYPE_CHECKING:  # SQLiteReads's, which comes before this in the store's bases
        async def _read(self, sql: str, params: Iterable[Any] = ()) -> list[Any]: ...

    def record_alerts(self, agent_id: str, alerts: list[AlertIn], dropped: int,
                      now: float) -> asyncio.Future[Effects[list[AlertRecorded]]]:
        return self._submit(lambda tx: record(tx, agent_id, alerts, dropped, now))

    async def list_alerts(self, *, agent_id: str | None, kind: str | None, since: float | None,
                          limit: int) -> AlertList:
        conds, params = [], []
        for cond, value in (("agent_id = ?", agent_id), ("kind = ?", kind), ("last_seen >= ?", since)):
            if value is not None:
                conds.append(cond)
                params.append(value)
        where = f" WHERE {' AND '.join(conds)}" if conds else ""
        rows = await self._read(f"SELECT {views.ALERT} FROM alerts{where} ORDER BY last_seen DESC, id DESC LIMIT ?",
                                (*params, limit))
        drops = await self._read(
            "SELECT agent_id, dropped, last_at FROM alert_drops" + (" WHERE agent_id = ?" if agent_id else "")
            + " ORDER BY last_at DESC LIMIT 100", (agent_id,) if agent_id else ())
        return AlertList(alerts=[views.alert_view(r) for r in rows], dropped=[AlertDrops(
            agent_id=r[0], dropped=r[1], last_at=r[2]) for r in drops])

    async def get_alert(self, alert_id: int) -> AlertView | None:
        rows = await self._read(f"SELECT {views.ALERT} FROM alerts WHERE id = ?", (alert_id,))
        return views.alert_view(rows[0]) if rows else None

    async def ack_alert(self, alert_id: int, now: float) -> Effects[AlertView]:
        def op(tx: Tx) -> Effects[AlertView]:
            row = tx.one(f"UPDATE alerts SET acked_at = ?, acked_count = count WHERE id = ? RETURNING {views.ALERT}",
                         (now, alert_id))
            if row is None:
                raise ProtocolError(ErrorCode.UNKNOWN_ALERT, f"no alert {alert_id} (see: tetherctl alerts)")
            return Effects(views.alert_view(row))

        result: Effects[AlertView] = await self._submit(op)
        return result
