"""What the store tests put in a store: a fixed clock, enrolled agents, tasks, results."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import NamedTuple

from tether.daemon.effects import Change, Effects, PushItem, Timer
from tether.daemon.store import NewTask, ResultIn, Store, Timing
from tether.protocol import pack
from tether.protocol.lifecycle import WaitPlan

NOW = 1_800_000_000.0


async def enrolled(store: Store, name: str, *tags: str) -> str:
    """A new agent ``name`` carrying ``tags`` (enrolled with a key that gives them)."""
    await store.bootstrap(NOW)
    key = (await store.create_key(list(tags), None, None, NOW)).result.key
    assert key is not None
    return (await store.enroll(key, f"uuid-{name}", name, "linux", list(tags), NOW)).result.agent_id


async def created(write: Awaitable[Effects[int]]) -> tuple[int, list[PushItem]]:
    """A created task's id, and the deliveries to push."""
    effects = await write
    return effects.result, effects.items


def task(kind: str = "agent", target: str = "", ttl: int = 60, priority: int = 1,
         hide_polling_output: bool = False) -> NewTask:
    return NewTask(command="echo", args={"x": 1}, target_kind=kind, target=target, priority=priority, ttl=ttl,
                   hide_polling_output=hide_polling_output)


def result(delivery_id: int, output: object, *, run: int = 1, ok: bool = True, plan: WaitPlan | None = None,
           finished_at: float = NOW + 1) -> ResultIn:
    return ResultIn(delivery_id=delivery_id, ok=ok, output=pack(output), started_at=NOW, finished_at=finished_at,
                    run=run, plan=plan)


def timers(effects: Effects[object], kind: Timer) -> list[tuple[int, float]]:
    """The ``(id, when)`` of the wheel entries of one kind a write sets."""
    return [(ident, when) for k, ident, when in effects.timers if k is kind]


class Polled(NamedTuple):
    """What a polling timer's write did: its changes, the next run to push, its timer."""

    changes: list[Change]
    items: list[PushItem]
    timer: float | None


def polled(effects: Effects[None]) -> Polled:
    (timer,) = timers(effects, Timer.POLL) or [(0, None)]
    return Polled(effects.changes, effects.items, timer[1])


class Fired(NamedTuple):
    """What a schedule's timer did: the task it created, its deliveries to push, the
    task's ttl and the schedule's next firing (each None if none)."""

    task_id: int | None
    items: list[PushItem]
    expires_at: float | None
    next_fire_at: float | None


def fired(effects: Effects[int | None]) -> Fired:
    ttl = timers(effects, Timer.EXPIRE) + timers(effects, Timer.EXPIRE_ONE)
    following = timers(effects, Timer.SCHEDULE)
    return Fired(effects.result, effects.items, ttl[0][1] if ttl else None, following[0][1] if following else None)


class Wheel(NamedTuple):
    """What ``Store.timers`` says the wheel must hold, by kind."""

    expiries: list[tuple[int, float, bool]]
    """(task_id, expires_at, a task for one agent)"""
    polls: list[tuple[int, float]]
    schedules: list[tuple[int, float]]
    selecting: list[tuple[int, float]]


async def wheel(store: Store) -> Wheel:
    effects = await store.timers()
    expiries = [(t, w, k is Timer.EXPIRE_ONE) for k, t, w in effects.timers if k in (Timer.EXPIRE, Timer.EXPIRE_ONE)]
    return Wheel(expiries, timers(effects, Timer.POLL), timers(effects, Timer.SCHEDULE), effects.selecting)


class Calendar:
    """A stand-in calendar: each firing ``step`` seconds after the time asked about."""

    def __init__(self, step: float) -> None:
        self.step = step

    def next_fire(self, timing: Timing, after: float) -> float:
        return after + self.step

    def missed_between(self, timing: Timing, due: float, now: float) -> int:
        raise AssertionError("not asked in these tests")
