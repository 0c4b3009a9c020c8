"""Alerts in the in-memory store: the same rows as :mod:`.sqlite_alerts`, in dicts."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from ...protocol.alerts import AlertDrops, AlertList, AlertView
from ...protocol.codec import pack
from ...protocol.errors import ErrorCode, ProtocolError
from ..effects import Effects
from . import AlertIn, AlertRecorded, views

T = TypeVar("T")


class MemoryAlerts:
    """Mixed into :class:`~.memory.MemoryStore`, which provides ``_future`` and ``_write``."""

    if TYPE_CHECKING:  # MemoryTables's, which comes before this in the store's bases
        def _write(self, op: Callable[[], T]) -> T: ...
        def _future(self, op: Callable[[], T]) -> asyncio.Future[T]: ...

    def _alert_tables(self) -> tuple[dict[bytes, list[Any]], dict[int, list[Any]], dict[str, list[Any]]]:
        if not hasattr(self, "_alerts_by_sum"):
            self._alerts_by_sum: dict[bytes, list[Any]] = {}
            self._alerts: dict[int, list[Any]] = {}
            self._alert_drops: dict[str, list[Any]] = {}
        return self._alerts_by_sum, self._alerts, self._alert_drops

    def record_alerts(self, agent_id: str, alerts: list[AlertIn], dropped: int,
                      now: float) -> asyncio.Future[Effects[list[AlertRecorded]]]:
        by_sum, by_id, drops = self._alert_tables()

        def op() -> Effects[list[AlertRecorded]]:
            recorded = []
            for a in alerts:
                b = a.body
                row = by_sum.get(a.checksum)
                details = pack(b.details) if b.details else None
                if row is None:
                    row = [len(by_id) + 1, agent_id, b.kind, b.name, b.path, b.hash, b.severity, b.message, 1, now,
                           now, None, 0, details, a.raised_at, a.delivery_id]
                    by_sum[a.checksum] = by_id[row[0]] = row
                else:
                    row[1:8] = [agent_id, b.kind, b.name, b.path, b.hash, b.severity, b.message]
                    row[8] += 1
                    row[10] = now
                    row[13:16] = [details, a.raised_at, a.delivery_id]
                recorded.append(AlertRecorded(alert_id=row[0], agent_id=agent_id, new=row[8] == 1, count=row[8],
                                              kind=b.kind, name=b.name, severity=b.severity))
            if dropped:
                entry = drops.setdefault(agent_id, [agent_id, 0, now])
                entry[1] += dropped
                entry[2] = now
            return Effects(recorded)

        fut: asyncio.Future[Effects[list[AlertRecorded]]] = self._future(op)
        return fut

    async def list_alerts(self, *, agent_id: str | None, kind: str | None, since: float | None,
                          limit: int) -> AlertList:
        _, by_id, drops = self._alert_tables()
        rows = [r for r in by_id.values() if (agent_id is None or r[1] == agent_id) and (kind is None or r[2] == kind)
                and (since is None or r[10] >= since)]
        rows.sort(key=lambda r: (r[10], r[0]), reverse=True)
        dropped = sorted((d for d in drops.values() if agent_id is None or d[0] == agent_id), key=lambda d: -d[2])
        return AlertList(alerts=[views.alert_view(tuple(r)) for r in rows[:limit]],
                         dropped=[AlertDrops(agent_id=d[0], dropped=d[1], last_at=d[2]) for d in dropped[:100]])

    async def get_alert(self, alert_id: int) -> AlertView | None:
        row = self._alert_tables()[1].get(alert_id)
        return None if row is None else views.alert_view(tuple(row))

    async def ack_alert(self, alert_id: int, now: float) -> Effects[AlertView]:
        by_id = self._alert_tables()[1]

        def op() -> Effects[AlertView]:
            row = by_id.get(alert_id)
            if row is None:
                raise ProtocolError(ErrorCode.UNKNOWN_ALERT, f"no alert {alert_id} (see: tetherctl alerts)")
            row[11], row[12] = now, row[8]
            return Effects(views.alert_view(tuple(row)))

        result: Effects[AlertView] = self._write(op)
        return result
