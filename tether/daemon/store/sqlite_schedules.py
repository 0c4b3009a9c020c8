"""Recurring schedules in the SQLite store.

Each firing creates an ordinary task (``sqlite_tasks.insert_task``), so push, ttl, untask
and history all apply; the task remembers its schedule. When a schedule fires next is
computed by the daemon's calendar (``daemon/schedules.py``), handed in: the store keeps
no calendar logic of its own.
"""

from __future__ import annotations

import asyncio
import math
import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any, cast

from ...protocol.codec import pack, unpack
from ...protocol.console import ScheduleView
from ...protocol.errors import ErrorCode, ProtocolError
from ..effects import Effects, Timer
from . import Calendar, NewSchedule, NewTask, Timing
from .rules import split_command_line
from .sqlite_tasks import check_target, insert_task
from .views import schedule_view
from .writer import Op, Tx

_COLUMNS = (
    "id, name, command, args, target_kind, target, every, cron, timezone, ttl, priority, hide_polling_output,"
    " missed, paused, created_at, anchor, next_fire_at, last_fire_at, fired, missed_total, skipped"
)


def _timing(row: Any) -> Timing:
    return Timing(every=row[6], cron=row[7], timezone=row[8], anchor=row[15])


def _finite(when: float) -> float | None:
    return when if math.isfinite(when) else None


class SQLiteSchedules:
    """Mixed into :class:`~.sqlite.SQLiteStore`, which provides ``_submit`` and ``_read``."""

    _submit: Callable[[Op], asyncio.Future[Any]]
    _read: Callable[..., Awaitable[list[Any]]]

    async def add_schedule(self, spec: NewSchedule, now: float, next_fire_at: float) -> Effects[ScheduleView]:
        task = spec.task

        def op(tx: Tx) -> Effects[ScheduleView]:
            check_target(tx, task.target_kind, task.target)
            try:
                schedule_id = tx.execute(
                    "INSERT INTO schedules (name, command, args, target_kind, target, every, cron, timezone, ttl,"
                    " priority, hide_polling_output, missed, created_at, anchor, next_fire_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (spec.name, spec.command, pack(task.args), task.target_kind, task.target, spec.every, spec.cron,
                     spec.timezone, task.ttl, task.priority, int(task.hide_polling_output), spec.missed, now, now,
                     next_fire_at),
                ).lastrowid
            except sqlite3.IntegrityError:
                raise ProtocolError(ErrorCode.SCHEDULE_EXISTS, f"a schedule named {spec.name!r} exists already") \
                    from None
            assert schedule_id is not None
            return Effects(schedule_view(tx.one(f"SELECT {_COLUMNS} FROM schedules WHERE id = ?", (schedule_id,))),
                           timers=[(Timer.SCHEDULE, schedule_id, next_fire_at)])

        result: Effects[ScheduleView] = await self._submit(op)
        return result

    async def list_schedules(self) -> list[ScheduleView]:
        return [schedule_view(r) for r in await self._read(f"SELECT {_COLUMNS} FROM schedules ORDER BY name")]

    async def get_schedule(self, name: str) -> ScheduleView | None:
        rows = await self._read(f"SELECT {_COLUMNS} FROM schedules WHERE name = ?", (name,))
        if not rows:
            return None
        recent = await self._read(
            "SELECT id FROM tasks WHERE schedule_id = ? ORDER BY id DESC LIMIT 10", (rows[0][0],))
        return schedule_view(rows[0], [r[0] for r in recent])

    async def pause_schedule(self, name: str, paused: bool, now: float,
                             calendar: Calendar) -> Effects[ScheduleView]:
        def op(tx: Tx) -> Effects[ScheduleView]:
            row = _by_name(tx, name)
            if paused:
                tx.execute("UPDATE schedules SET paused = 1, next_fire_at = NULL WHERE id = ?", (row[0],))
            elif row[13]:  # resuming: the next firing after now; those missed while paused are not run
                tx.execute("UPDATE schedules SET paused = 0, next_fire_at = ? WHERE id = ?",
                           (_finite(calendar.next_fire(_timing(row), now)), row[0]))
            view = schedule_view(tx.one(f"SELECT {_COLUMNS} FROM schedules WHERE id = ?", (row[0],)))
            if view.next_fire_at is None:
                return Effects(view, cleared=[(Timer.SCHEDULE, view.schedule_id)])
            return Effects(view, timers=[(Timer.SCHEDULE, view.schedule_id, view.next_fire_at)])

        result: Effects[ScheduleView] = await self._submit(op)
        return result

    async def remove_schedule(self, name: str) -> Effects[None]:
        def op(tx: Tx) -> Effects[None]:
            schedule_id: int = _by_name(tx, name)[0]
            tx.execute("DELETE FROM schedules WHERE id = ?", (schedule_id,))
            # Its tasks stay, naming no schedule: SQLite hands the largest rowid out again, and
            # the next schedule added must not inherit them.
            tx.execute("UPDATE tasks SET schedule_id = NULL WHERE schedule_id = ?", (schedule_id,))
            return Effects(None, cleared=[(Timer.SCHEDULE, schedule_id)])

        result: Effects[None] = await self._submit(op)
        return result

    def fire_schedule(self, schedule_id: int, now: float,
                      calendar: Calendar) -> asyncio.Future[Effects[int | None]]:
        def op(tx: Tx) -> Effects[int | None]:
            row = tx.one(f"SELECT {_COLUMNS} FROM schedules WHERE id = ?", (schedule_id,))
            if row is None or row[13] or row[16] is None:
                return Effects(None)  # removed or paused meanwhile
            if row[16] > now:
                return Effects(None, timers=[(Timer.SCHEDULE, schedule_id, row[16])])  # not due yet (woken early)
            following = _finite(calendar.next_fire(_timing(row), now))
            task = NewTask(
                command=row[2], args=unpack(row[3]), target_kind=row[4], target=row[5], priority=row[10],
                ttl=row[9], hide_polling_output=bool(row[11]), schedule_id=schedule_id,
            )
            effects = cast("Effects[int | None]", insert_task(tx, split_command_line(task), now))
            tx.execute(
                "UPDATE schedules SET fired = fired + 1, last_fire_at = ?, next_fire_at = ? WHERE id = ?",
                (now, following, schedule_id))
            if following is not None:
                effects.timers.append((Timer.SCHEDULE, schedule_id, following))
            return effects

        return self._submit(op)

    async def skip_missed(self, now: float, calendar: Calendar) -> Effects[list[tuple[str, int]]]:
        def op(tx: Tx) -> Effects[list[tuple[str, int]]]:
            missed = []
            rows = tx.execute(
                f"SELECT {_COLUMNS} FROM schedules WHERE paused = 0 AND next_fire_at <= ?", (now,)).fetchall()
            for row in rows:
                count = calendar.missed_between(_timing(row), row[16], now)
                if row[12] == "skip":
                    tx.execute(
                        "UPDATE schedules SET next_fire_at = ?, missed_total = missed_total + ?,"
                        " skipped = skipped + ? WHERE id = ?",
                        (_finite(calendar.next_fire(_timing(row), now)), count, count, row[0]))
                else:  # 'once': stays due, so it fires once as the wheel starts
                    tx.execute("UPDATE schedules SET missed_total = missed_total + ? WHERE id = ?", (count, row[0]))
                missed.append((row[1], count))
            return Effects(missed)

        result: Effects[list[tuple[str, int]]] = await self._submit(op)
        return result


def _by_name(tx: Tx, name: str) -> Any:
    row = tx.one(f"SELECT {_COLUMNS} FROM schedules WHERE name = ?", (name,))
    if row is None:
        raise ProtocolError(ErrorCode.UNKNOWN_SCHEDULE, f"no schedule named {name!r} (see: tetherctl schedule list)")
    return row
