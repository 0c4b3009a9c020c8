"""The broker's timer wheel and loop, on a fake clock, a store in memory and an agent
session with no socket (what it would push is read from its queue)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator

import pytest
from store_data import NOW, enrolled, result, task

from tether.daemon.broker import RETRY_AFTER_STORE_ERROR, Broker, Timer
from tether.daemon.session import AgentSession
from tether.daemon.store import Change, NewSchedule, PollOutcome
from tether.daemon.store.sqlite import SQLiteStore
from tether.protocol import pack, unpack
from tether.protocol.codec import MSGPACK
from tether.protocol.frames import Cancel
from tether.protocol.lifecycle import WaitPlan

T1 = NOW + 1
NEXT = T1 + 30
DEADLINE = T1 + 120
WAIT = 5.0
"""Seconds a test waits for the loop to react before it fails (never a synchronisation sleep)."""


class Clock:
    """A clock that moves only when the test says so."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def broker() -> AsyncIterator[Broker]:
    store = SQLiteStore(":memory:")
    await store.open()
    yield Broker(store, clock=Clock(NOW))
    await store.close()


def clock(broker: Broker) -> Clock:
    assert isinstance(broker.clock, Clock)
    return broker.clock


def online(broker: Broker, agent_id: str) -> AgentSession:
    session = AgentSession(None, MSGPACK, agent_id, "s1", 10, set(), broker)  # type: ignore[arg-type]
    broker.register(session)
    return session


def queued(session: AgentSession) -> list[tuple[int, int, str]]:
    """(delivery, run, command) of what the session would push next."""
    return sorted((item.delivery_id, item.run, item.command) for *_, item in session.heap)


@contextlib.asynccontextmanager
async def timer_loop(broker: Broker) -> AsyncIterator[None]:
    async with asyncio.TaskGroup() as tg:
        loop = tg.create_task(broker.run_timers())
        try:
            yield
        finally:
            loop.cancel()


def changed(broker: Broker, task_id: int, count: int = 1) -> asyncio.Future[list[Change]]:
    """A future resolved with the task's next ``count`` committed changes."""
    done: asyncio.Future[list[Change]] = asyncio.get_running_loop().create_future()
    seen: list[Change] = []

    def notify(change: Change) -> None:
        seen.append(change)
        if len(seen) == count and not done.done():
            done.set_result(seen)

    done.add_done_callback(lambda _: unwatch())
    unwatch = broker.watch(task_id, notify)
    return done


async def handled(fut: asyncio.Future[object]) -> None:
    """Wait until ``fut`` is done and the callbacks registered on it before this call (the
    broker's) have run: asyncio calls a future's callbacks in the order they were added."""
    after = asyncio.Event()
    fut.add_done_callback(lambda _: after.set())
    async with asyncio.timeout(WAIT):
        await after.wait()


async def waiting(broker: Broker) -> tuple[str, int, int]:
    """A delivery whose run 1 asked for run 2 in 30 s (sequence timeout 120 s): (agent, task, delivery)."""
    store = broker.store
    assert isinstance(store, SQLiteStore)
    a = await enrolled(store, "a")
    task_id, (item,) = await store.create_task(task("agent", a, ttl=3600), NOW)
    d = item.delivery_id
    plan = WaitPlan(command="poll_status", args=pack({"job": 7}), interval=30.0, timeout=120.0)
    out = await store.record_results(a, [result(d, {"p": 1}, plan=plan)], T1)
    assert out.timers == [(d, NEXT)]
    return a, task_id, d


# -- one entry per key ---------------------------------------------------------------------


async def test_setting_a_timer_again_replaces_its_entry(broker: Broker) -> None:
    broker.set_timer(Timer.POLL, 5, NOW + 10)
    broker.set_timer(Timer.POLL, 5, NOW + 20)
    assert len(broker.wheel) == 1
    broker.set_timer(Timer.EXPIRE, 5, NOW + 10)  # the same id of another kind is another entry
    assert len(broker.wheel) == 2
    assert broker.wheel.advance(NOW + 15) == [5 << 2 | Timer.EXPIRE]  # the replaced POLL entry is gone
    assert broker.wheel.advance(NOW + 20) == [5 << 2 | Timer.POLL]


async def test_clearing_a_timer_removes_its_entry(broker: Broker) -> None:
    broker.set_timer(Timer.SCHEDULE, 9, NOW + 10)
    broker.set_timer(Timer.POLL, 9, NOW + 10)
    broker.clear_timer(Timer.SCHEDULE, 9)
    broker.clear_timer(Timer.SCHEDULE, 9)  # clearing twice, or what was never set, is fine
    broker.clear_timer(Timer.EXPIRE, 12345)
    assert len(broker.wheel) == 1
    assert broker.wheel.advance(NOW + 10) == [9 << 2 | Timer.POLL]


async def test_an_ended_delivery_takes_its_polling_timer_with_it(broker: Broker) -> None:
    broker.set_timer(Timer.POLL, 3, NOW + 10)
    broker.apply([Change(3, 1, "a", "waiting", "cancelled")], withdraw=True)
    assert len(broker.wheel) == 0


# -- the loop ------------------------------------------------------------------------------


async def test_a_task_for_one_agent_gives_up_its_ttl_entry_when_its_delivery_ends(broker: Broker) -> None:
    """Else every task held a wheel entry for its whole ttl (a week by default): the soak
    benchmark's tetherd grew by ~160 B per task created."""
    store = broker.store
    a = await enrolled(store, "a")
    one, (item,) = await store.create_task(task("agent", a), NOW)
    broker.schedule_expiry(one, NOW + 60, one_agent=True)
    tagged, _ = await store.create_task(task("all"), NOW)
    broker.schedule_expiry(tagged, NOW + 60)
    assert len(broker.wheel) == 2
    outcome = await store.record_results(a, [result(item.delivery_id, 1)], NOW)
    broker.apply(outcome.changes)
    assert broker.wheel.advance(NOW + 60) == [tagged << 2 | Timer.EXPIRE]  # the one-agent entry is gone
    await broker.load_timers()  # and it is not rebuilt at start
    assert [k for k in broker._timers if k >> 2 == one] == []


async def test_a_due_poll_queues_the_next_run_offers_it_and_arms_the_deadline(broker: Broker) -> None:
    a, task_id, d = await waiting(broker)
    session = online(broker, a)
    clock(broker).now = NEXT
    async with timer_loop(broker):
        change = changed(broker, task_id)
        broker.set_timer(Timer.POLL, d, NEXT)
        async with asyncio.timeout(WAIT):
            assert await change == [Change(d, task_id, a, "waiting", "queued")]
            await session.wake.wait()
    assert queued(session) == [(d, 2, "poll_status")]  # run 2, with the scheduled command
    assert broker.wheel.advance(DEADLINE - 1) == []
    assert broker.wheel.advance(DEADLINE) == [d << 2 | Timer.POLL]  # re-armed at the sequence's timeout


async def test_an_early_poll_timer_is_put_back_for_the_next_run(broker: Broker) -> None:
    _, _, d = await waiting(broker)
    clock(broker).now = NEXT - 10
    fired = broker._fire(d << 2 | Timer.POLL, NEXT - 10)
    await handled(fired)
    assert fired.result() == PollOutcome([], [], NEXT)
    assert broker.wheel.advance(NEXT - 1) == []
    assert broker.wheel.advance(NEXT) == [d << 2 | Timer.POLL]


@pytest.mark.parametrize("pushed", [False, True], ids=["still-queued", "on-the-wire"])
async def test_the_sequence_timeout_withdraws_an_undelivered_run(broker: Broker, pushed: bool) -> None:
    a, task_id, d = await waiting(broker)
    session = online(broker, a)
    clock(broker).now = NEXT
    async with timer_loop(broker):
        change = changed(broker, task_id)
        broker.set_timer(Timer.POLL, d, NEXT)
        async with asyncio.timeout(WAIT):
            await change
        if pushed:  # what the session's pusher does with it
            assert [i.delivery_id for i in session._take()] == [d]
        clock(broker).now = DEADLINE
        change = changed(broker, task_id)
        broker.set_timer(Timer.POLL, d, DEADLINE)  # as the wheel holds it
        async with asyncio.timeout(WAIT):
            assert await change == [Change(d, task_id, a, "queued", "failed")]
    view = await broker.store.get_task(task_id)
    assert view is not None and view.deliveries[0].error == "polling timed out after 120 s"
    if pushed:  # the agent is told to drop run 2
        assert list(session.control) == [Cancel(delivery_id=d, reason="expired")]
    else:  # never pushed: nothing to tell, and it will not be
        assert (list(session.control), session._take()) == ([], [])
    assert len(broker.wheel) == 0


async def test_a_timeout_of_a_waiting_delivery_tells_the_agent_nothing(broker: Broker) -> None:
    a, task_id, d = await waiting(broker)
    session = online(broker, a)  # its run's result is in: the agent holds nothing of it
    clock(broker).now = DEADLINE
    async with timer_loop(broker):
        change = changed(broker, task_id)
        broker.set_timer(Timer.POLL, d, DEADLINE)
        async with asyncio.timeout(WAIT):
            assert await change == [Change(d, task_id, a, "waiting", "failed")]
    assert (list(session.control), queued(session), len(broker.wheel)) == ([], [], 0)


async def test_a_schedule_fires_a_task_to_the_online_agent_and_arms_its_timers(broker: Broker) -> None:
    store = broker.store
    assert isinstance(store, SQLiteStore)
    a = await enrolled(store, "a")
    session = online(broker, a)
    spec = NewSchedule(name="state", command="record --from s", every=300.0, cron=None, timezone="UTC",
                       missed="once", task=task("agent", a, ttl=60))
    sid = (await store.add_schedule(spec, NOW, NOW + 300)).schedule_id
    clock(broker).now = NOW + 300
    async with timer_loop(broker):
        broker.set_timer(Timer.SCHEDULE, sid, NOW + 300)
        async with asyncio.timeout(WAIT):
            await session.wake.wait()
    view = await store.get_schedule("state")
    assert view is not None and view.fired == 1
    (task_id,) = view.recent_tasks
    ((*_, item),) = session.heap
    assert (item.task_id, item.run, item.command, unpack(item.args)) == (task_id, 1, "record", {"from": "s", "x": 1})
    assert broker.wheel.advance(NOW + 360) == [task_id << 2 | Timer.EXPIRE]  # the task's ttl
    assert broker.wheel.advance(NOW + 600) == [sid << 2 | Timer.SCHEDULE]  # the next firing


async def test_a_timer_whose_store_operation_fails_is_tried_again(broker: Broker) -> None:
    def poll_due(delivery_id: int, now: float) -> asyncio.Future[PollOutcome]:
        failed: asyncio.Future[PollOutcome] = asyncio.get_running_loop().create_future()
        failed.set_exception(sqlite3.OperationalError("database or disk is full"))
        return failed

    broker.store.poll_due = poll_due  # type: ignore[method-assign]
    fired = broker._fire(4 << 2 | Timer.POLL, NOW)
    await handled(fired)
    assert isinstance(fired.exception(), sqlite3.OperationalError)
    assert broker.wheel.advance(NOW + RETRY_AFTER_STORE_ERROR) == [4 << 2 | Timer.POLL]
