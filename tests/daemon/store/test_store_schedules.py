"""Recurring schedules in the store, on every backend.

The store keeps no calendar of its own: when a schedule fires next comes from the
calendar it is handed (here often a stand-in, to show it is the one used).
"""

from __future__ import annotations

import msgspec
import pytest
from store_data import NOW, Calendar, Fired, enrolled, fired, wheel

from tether.daemon.effects import Timer
from tether.daemon.schedules import CALENDAR
from tether.daemon.store import NewSchedule, NewTask
from tether.daemon.store.sqlite import SQLiteStore
from tether.protocol import ErrorCode, ProtocolError

EVERY = 300.0


def schedule(name: str = "state", *, command: str = "record --from s", target_kind: str = "tag",
             target: str = "linux", missed: str = "once", **args: object) -> NewSchedule:
    """As ``schedule.add`` hands it over: the command line as given, the args apart."""
    return NewSchedule(
        name=name, command=command,
        task=NewTask(command=command, args=args or {"limit": 5}, target_kind=target_kind, target=target,
                     priority=2, ttl=60, hide_polling_output=True),
        every=EVERY, cron=None, timezone="UTC", missed=missed,
    )


async def added(store: SQLiteStore, *specs: NewSchedule) -> list[int]:
    """Agents a (tagged linux) and b, then the schedules, added at NOW: their ids."""
    await enrolled(store, "a", "linux")
    await enrolled(store, "b")
    return [((await store.add_schedule(spec, NOW, NOW + EVERY)).result).schedule_id for spec in specs]


PLUS_SEVEN = Calendar(7)


async def test_add_then_list_and_get(store: SQLiteStore) -> None:
    await enrolled(store, "a", "linux")
    view = (await store.add_schedule(schedule("zeta"), NOW, NOW + EVERY)).result
    assert (view.name, view.command, view.args, view.target) == ("zeta", "record --from s", {"limit": 5}, "tag:linux")
    assert (view.every, view.cron, view.timezone, view.missed) == (EVERY, None, "UTC", "once")
    assert (view.ttl, view.priority, view.hide_polling_output, view.paused) == (60, 2, True, False)
    assert (view.created_at, view.next_fire_at, view.last_fire_at) == (NOW, NOW + EVERY, None)
    assert (view.fired, view.missed_total, view.skipped, view.recent_tasks) == (0, 0, 0, [])
    await store.add_schedule(schedule("alpha", target_kind="all", target=""), NOW, NOW + EVERY)
    assert [(s.name, s.target) for s in await store.list_schedules()] == [("alpha", "all"), ("zeta", "tag:linux")]
    assert await store.get_schedule("zeta") == view
    assert await store.get_schedule("Zeta") is None  # names are case-sensitive


async def test_a_duplicate_name_or_an_unknown_agent_is_refused(store: SQLiteStore) -> None:
    await added(store, schedule("state"))
    for spec, code in ((schedule("state", target_kind="all", target=""), ErrorCode.SCHEDULE_EXISTS),
                       (schedule("x", target_kind="agent", target="nobody"), ErrorCode.UNKNOWN_AGENT)):
        with pytest.raises(ProtocolError) as err:
            await store.add_schedule(spec, NOW, NOW + EVERY)
        assert err.value.code == code
    await store.add_schedule(schedule("y", target_kind="tag", target="windows"), NOW, NOW + EVERY)  # tagged later
    assert [s.name for s in await store.list_schedules()] == ["state", "y"]


async def test_a_firing_creates_an_ordinary_task_from_the_command_line(store: SQLiteStore) -> None:
    (sid,) = await added(store, schedule("state"))
    firing = fired(await store.fire_schedule(sid, NOW + EVERY, PLUS_SEVEN))
    assert firing.task_id is not None
    assert (firing.expires_at, firing.next_fire_at) == (NOW + EVERY + 60, NOW + EVERY + 7)
    assert [(i.command, msgspec.msgpack.decode(i.args)) for i in firing.items] == \
        [("record", {"from": "s", "limit": 5})]  # the tagged agent only
    view = await store.get_task(firing.task_id)
    assert view is not None
    assert (view.command, view.args, view.target, view.schedule) == \
        ("record", {"from": "s", "limit": 5}, "tag:linux", "state")
    assert (view.priority, view.ttl, view.hide_polling_output, view.state) == (2, 60, True, "active")
    s = await store.get_schedule("state")
    assert s is not None
    assert (s.fired, s.last_fire_at, s.next_fire_at, s.recent_tasks) == \
        (1, NOW + EVERY, NOW + EVERY + 7, [firing.task_id])
    assert (await wheel(store)).schedules == [(sid, NOW + EVERY + 7)]


async def test_the_schedules_args_win_over_the_command_lines(store: SQLiteStore) -> None:
    (sid,) = await added(store, schedule("state", **{"from": "args", "to": "t"}))
    firing = fired(await store.fire_schedule(sid, NOW + EVERY, CALENDAR))
    assert firing.task_id is not None
    view = await store.get_task(firing.task_id)
    assert view is not None and view.args == {"from": "args", "to": "t"}


async def test_recent_tasks_are_newest_first_and_firings_stay_on_their_grid(store: SQLiteStore) -> None:
    (sid,) = await added(store, schedule("state"))
    tasks, due = [], NOW + EVERY
    for late in (0.0, 4.5, 299.0):  # however late a firing runs, the next stays anchored
        firing = fired(await store.fire_schedule(sid, due + late, CALENDAR))
        assert firing.next_fire_at is not None
        tasks.append(firing.task_id)
        due = firing.next_fire_at
    s = await store.get_schedule("state")
    assert s is not None
    assert s.recent_tasks == tasks[::-1]
    assert (s.fired, s.next_fire_at) == (3, NOW + 4 * EVERY)


async def test_an_early_firing_does_nothing_but_say_when(store: SQLiteStore) -> None:
    (sid,) = await added(store, schedule("state"))
    assert fired(await store.fire_schedule(sid, NOW + EVERY - 1, PLUS_SEVEN)) == Fired(None, [], None, NOW + EVERY)
    s = await store.get_schedule("state")
    assert s is not None and (s.fired, s.next_fire_at) == (0, NOW + EVERY)


async def test_a_paused_or_removed_schedule_does_not_fire(store: SQLiteStore) -> None:
    paused, removed = await added(store, schedule("paused"), schedule("removed"))
    await store.pause_schedule("paused", True, NOW, CALENDAR)
    await store.remove_schedule("removed")
    for sid in (paused, removed):
        assert fired(await store.fire_schedule(sid, NOW + EVERY, CALENDAR)) == Fired(None, [], None, None)
    assert await store.list_deliveries(agent_id=None, tag=None, states=None, limit=10) == []


async def test_pause_and_resume(store: SQLiteStore) -> None:
    (sid,) = await added(store, schedule("state"))
    view = (await store.pause_schedule("state", True, NOW + 10, CALENDAR)).result
    assert (view.paused, view.next_fire_at) == (True, None)
    assert (await wheel(store)).schedules == []
    # Resumed after three periods: the next firing after now, on the grid; those missed meanwhile do not run.
    view = (await store.pause_schedule("state", False, NOW + 1000, CALENDAR)).result
    assert (view.paused, view.next_fire_at) == (False, NOW + 4 * EVERY)
    assert (await wheel(store)).schedules == [(sid, NOW + 4 * EVERY)]
    again = (await store.pause_schedule("state", False, NOW + 2000, CALENDAR)).result  # already running: no change
    assert again.next_fire_at == NOW + 4 * EVERY
    with pytest.raises(ProtocolError) as err:
        await store.pause_schedule("nope", True, NOW, CALENDAR)
    assert err.value.code == ErrorCode.UNKNOWN_SCHEDULE


async def test_a_cron_with_no_next_date_stays_without_a_timer(store: SQLiteStore) -> None:
    (sid,) = await added(store, schedule("state"))
    firing = fired(await store.fire_schedule(sid, NOW + EVERY, Calendar(float("inf"))))
    assert firing.task_id is not None and firing.next_fire_at is None
    assert (await wheel(store)).schedules == []


async def test_remove_keeps_the_tasks(store: SQLiteStore) -> None:
    (sid,) = await added(store, schedule("state"))
    firing = fired(await store.fire_schedule(sid, NOW + EVERY, CALENDAR))
    assert firing.task_id is not None
    assert (await store.remove_schedule("state")).cleared == [(Timer.SCHEDULE, sid)]
    assert await store.get_schedule("state") is None
    assert await store.list_schedules() == []
    for again in (store.remove_schedule("state"), store.pause_schedule("state", False, NOW, CALENDAR)):
        with pytest.raises(ProtocolError) as err:
            await again
        assert err.value.code == ErrorCode.UNKNOWN_SCHEDULE
    view = await store.get_task(firing.task_id)
    assert view is not None and (view.command, view.schedule, len(view.deliveries)) == ("record", None, 1)


async def test_a_new_schedule_does_not_inherit_a_removed_ones_tasks(store: SQLiteStore) -> None:
    (sid,) = await added(store, schedule("old"))
    firing = fired(await store.fire_schedule(sid, NOW + EVERY, CALENDAR))
    assert firing.task_id is not None
    await store.remove_schedule("old")
    await store.add_schedule(schedule("new"), NOW + EVERY, NOW + 2 * EVERY)  # SQLite may give it the same id
    new = await store.get_schedule("new")
    assert new is not None and new.recent_tasks == []
    view = await store.get_task(firing.task_id)
    assert view is not None and view.schedule is None


async def test_missed_firings_are_skipped_or_left_due(store: SQLiteStore) -> None:
    skip, once, _ = await added(store, schedule("skip", missed="skip"), schedule("once", missed="once"),
                                schedule("paused", missed="skip"))
    await store.pause_schedule("paused", True, NOW, CALENDAR)
    later = (await store.add_schedule(schedule("later", missed="skip"), NOW + 1000, NOW + 1300)).result  # first ahead
    # tetherd was down from before NOW + 300 until NOW + 1000: firings at +300, +600 and +900 were missed.
    missed = (await store.skip_missed(NOW + 1000, CALENDAR)).result
    assert sorted(missed) == [("once", 3), ("skip", 3)]
    views = {s.name: s for s in await store.list_schedules()}
    assert (views["skip"].next_fire_at, views["skip"].missed_total, views["skip"].skipped) == (NOW + 1200, 3, 3)
    assert (views["once"].next_fire_at, views["once"].missed_total, views["once"].skipped) == (NOW + EVERY, 3, 0)
    assert (views["paused"].missed_total, views["later"].missed_total) == (0, 0)
    assert (fired(await store.fire_schedule(once, NOW + 1000, CALENDAR))).next_fire_at == NOW + 1200  # the one run
    assert (await store.skip_missed(NOW + 1000, CALENDAR)).result == []  # nothing counted twice
    assert sorted((await wheel(store)).schedules) == \
        sorted([(skip, NOW + 1200), (once, NOW + 1200), (later.schedule_id, NOW + 1300)])
