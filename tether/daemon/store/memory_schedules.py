"""Recurring schedules in the in-memory store (as ``sqlite_schedules``): each firing
creates an ordinary task; when it fires next comes from the calendar handed in."""

from __future__ import annotations

import asyncio

from ...protocol.codec import pack, unpack
from ...protocol.console import ScheduleView
from ...protocol.errors import ErrorCode, ProtocolError
from ..effects import Effects, Timer
from . import (
    Calendar,
    NewSchedule,
    NewTask,
    views,
)
from .memory_tables import MemoryTables, ScheduleRecord, finite, next_id
from .rules import split_command_line


class MemorySchedules(MemoryTables):
    def _by_name(self, name: str) -> ScheduleRecord:
        for s in self._schedules.values():
            if s.name == name:
                return s
        raise ProtocolError(ErrorCode.UNKNOWN_SCHEDULE, f"no schedule named {name!r} (see: tetherctl schedule list)")

    async def add_schedule(self, spec: NewSchedule, now: float, next_fire_at: float) -> Effects[ScheduleView]:
        task = spec.task

        def op() -> Effects[ScheduleView]:
            if task.target_kind == "agent":
                self._live(task.target)
            if any(s.name == spec.name for s in self._schedules.values()):
                raise ProtocolError(ErrorCode.SCHEDULE_EXISTS, f"a schedule named {spec.name!r} exists already")
            s = ScheduleRecord(next_id(self._schedules), spec.name, spec.command, pack(task.args), task.target_kind,
                          task.target, spec.every, spec.cron, spec.timezone, task.ttl, task.priority,
                          task.hide_polling_output, spec.missed, now, now, next_fire_at)
            self._schedules[s.id] = s
            return Effects(views.schedule_view(s.row()), timers=[(Timer.SCHEDULE, s.id, next_fire_at)])

        return self._write(op)

    async def list_schedules(self) -> list[ScheduleView]:
        return [views.schedule_view(s.row()) for s in sorted(self._schedules.values(), key=lambda s: s.name)]

    async def get_schedule(self, name: str) -> ScheduleView | None:
        try:
            s = self._by_name(name)
        except ProtocolError:
            return None
        recent = sorted((t.id for t in self._tasks.values() if t.schedule_id == s.id), reverse=True)[:10]
        return views.schedule_view(s.row(), recent)

    async def pause_schedule(self, name: str, paused: bool, now: float,
                             calendar: Calendar) -> Effects[ScheduleView]:
        def op() -> Effects[ScheduleView]:
            s = self._by_name(name)
            if paused:
                s.paused, s.next_fire_at = True, None
            elif s.paused:  # resuming: the next firing after now; those missed while paused are not run
                s.paused, s.next_fire_at = False, finite(calendar.next_fire(s.timing(), now))
            view = views.schedule_view(s.row())
            if s.next_fire_at is None:
                return Effects(view, cleared=[(Timer.SCHEDULE, s.id)])
            return Effects(view, timers=[(Timer.SCHEDULE, s.id, s.next_fire_at)])

        return self._write(op)

    async def remove_schedule(self, name: str) -> Effects[None]:
        def op() -> Effects[None]:
            s = self._by_name(name)
            del self._schedules[s.id]
            for t in self._tasks.values():  # its tasks stay, naming no schedule
                if t.schedule_id == s.id:
                    t.schedule_id = None
            return Effects(None, cleared=[(Timer.SCHEDULE, s.id)])

        return self._write(op)

    def fire_schedule(self, schedule_id: int, now: float, calendar: Calendar) -> asyncio.Future[Effects[int | None]]:
        def op() -> Effects[int | None]:
            s = self._schedules.get(schedule_id)
            if s is None or s.paused or s.next_fire_at is None:
                return Effects(None)  # removed or paused meanwhile
            if s.next_fire_at > now:
                return Effects(None, timers=[(Timer.SCHEDULE, schedule_id, s.next_fire_at)])  # woken early
            following = finite(calendar.next_fire(s.timing(), now))
            created = self._insert_task(split_command_line(NewTask(
                command=s.command, args=unpack(s.args), target_kind=s.target_kind, target=s.target,
                priority=s.priority, ttl=s.ttl, hide_polling_output=s.hide_polling_output, schedule_id=schedule_id,
            )), now)
            s.fired, s.last_fire_at, s.next_fire_at = s.fired + 1, now, following
            effects: Effects[int | None] = Effects(created.result, items=created.items, timers=created.timers)
            if following is not None:
                effects.timers.append((Timer.SCHEDULE, schedule_id, following))
            return effects

        return self._future(op)

    async def skip_missed(self, now: float, calendar: Calendar) -> Effects[list[tuple[str, int]]]:
        def op() -> Effects[list[tuple[str, int]]]:
            missed = []
            for s in self._schedules.values():
                if s.paused or s.next_fire_at is None or s.next_fire_at > now:
                    continue
                count = calendar.missed_between(s.timing(), s.next_fire_at, now)
                s.missed_total += count
                if s.missed == "skip":
                    s.next_fire_at = finite(calendar.next_fire(s.timing(), now))
                    s.skipped += count
                missed.append((s.name, count))  # 'once': stays due, so it fires once as the wheel starts
            return Effects(missed)

        return self._write(op)
