"""Operations: each write's effects applied in one place, and the timer wheel driven from
the clock; on a fake clock, the in-memory store and agent sessions with no socket (what one
would push is read from its queue)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator

import msgspec
import pytest
from clocks import ArmingClock
from sessions_data import online, queued
from store_data import NOW, created, enrolled, result, task

from tether.daemon.clock import FakeClock
from tether.daemon.effects import Change, Effects, PushItem, Timer
from tether.daemon.operations import RETRY_AFTER_STORE_ERROR, Happened, Operations
from tether.daemon.store import NewSchedule
from tether.daemon.store.memory import MemoryStore
from tether.daemon.timers import MAX_WAIT, Timers
from tether.protocol import pack, unpack
from tether.protocol.frames import Cancel
from tether.protocol.lifecycle import WaitPlan

T1 = NOW + 1
NEXT = T1 + 30
DEADLINE = T1 + 120
WAIT = 5.0
"""Seconds a test waits for the loop to react before it fails (never a synchronisation sleep)."""


@pytest.fixture
async def operations() -> AsyncIterator[Operations]:
    store = MemoryStore()
    await store.open()
    yield Operations(store, FakeClock(NOW))
    await store.close()


def clock(operations: Operations) -> FakeClock:
    assert isinstance(operations.clock, FakeClock)
    return operations.clock


@contextlib.asynccontextmanager
async def timer_loop(operations: Operations) -> AsyncIterator[None]:
    async with asyncio.TaskGroup() as tg:
        loop = tg.create_task(operations.timers.run(operations.fire))
        try:
            yield
        finally:
            loop.cancel()


def changed(operations: Operations, task_id: int, count: int = 1) -> asyncio.Future[list[Change]]:
    """A future resolved with the task's next ``count`` committed changes."""
    done: asyncio.Future[list[Change]] = asyncio.get_running_loop().create_future()
    seen: list[Change] = []

    def notify(change: Change) -> None:
        seen.append(change)
        if len(seen) == count and not done.done():
            done.set_result(seen)

    done.add_done_callback(lambda _: unwatch())
    unwatch = operations.watchers.watch(task_id, notify)
    return done


async def handled(fut: asyncio.Future[object]) -> None:
    """Wait until ``fut`` is done and the callbacks registered on it before this call (the
    operations') have run: asyncio calls a future's callbacks in the order they were added."""
    after = asyncio.Event()
    fut.add_done_callback(lambda _: after.set())
    async with asyncio.timeout(WAIT):
        await after.wait()


async def waiting(operations: Operations) -> tuple[str, int, int]:
    """A delivery whose run 1 asked for run 2 in 30 s (sequence timeout 120 s): (agent, task, delivery)."""
    store = operations.store
    a = await enrolled(store, "a")
    task_id, (item,) = await created(store.create_task(task("agent", a, ttl=3600), NOW))
    d = item.delivery_id
    plan = WaitPlan(command="poll_status", args=pack({"job": 7}), interval=30.0, timeout=120.0)
    out = await store.record_results(a, [result(d, {"p": 1}, plan=plan)], T1)
    assert (Timer.POLL, d, NEXT) in out.timers
    return a, task_id, d


# -- one entry per key ---------------------------------------------------------------------


async def test_setting_a_timer_again_replaces_its_entry(operations: Operations) -> None:
    timers = operations.timers
    timers.set(Timer.POLL, 5, NOW + 10)
    timers.set(Timer.POLL, 5, NOW + 20)
    assert len(timers) == 1
    timers.set(Timer.EXPIRE, 5, NOW + 10)  # the same id of another kind is another entry
    assert len(timers) == 2
    assert timers.due(NOW + 15) == [(Timer.EXPIRE, 5)]  # the replaced POLL entry is gone
    assert timers.due(NOW + 20) == [(Timer.POLL, 5)]


async def test_clearing_a_timer_removes_its_entry(operations: Operations) -> None:
    timers = operations.timers
    timers.set(Timer.SCHEDULE, 9, NOW + 10)
    timers.set(Timer.POLL, 9, NOW + 10)
    timers.clear(Timer.SCHEDULE, 9)
    timers.clear(Timer.SCHEDULE, 9)  # clearing twice, or what was never set, is fine
    timers.clear(Timer.EXPIRE, 12345)
    assert len(timers) == 1
    assert timers.due(NOW + 10) == [(Timer.POLL, 9)]


# -- effects, applied in one place -----------------------------------------------------------


async def test_an_ended_delivery_takes_its_timers_with_it(operations: Operations) -> None:
    operations.timers.set(Timer.POLL, 3, NOW + 10)
    operations.timers.set(Timer.EXPIRE_ONE, 1, NOW + 60)
    operations.apply(Effects(None, changes=[Change(3, 1, "a", "waiting", "cancelled")]))
    assert len(operations.timers) == 0


async def test_effects_are_applied_to_sessions_watchers_timers_and_selectors(operations: Operations) -> None:
    a, b = online(operations.push, "a"), online(operations.push, "b")
    seen: list[Change] = []
    operations.watchers.watch(7, seen.append)
    pushed = [PushItem(1, 7, "a", "echo", pack({}), 1, NOW + 60), PushItem(2, 7, "offline", "echo", pack({}), 1,
                                                                            NOW + 60)]
    operations.timers.set(Timer.SCHEDULE, 4, NOW + 10)
    operations.apply(Effects(
        None, changes=[Change(5, 7, "b", "sent", "cancelled")], items=pushed,
        timers=[(Timer.EXPIRE, 7, NOW + 60)], cleared=[(Timer.SCHEDULE, 4)], withdraws=[("b", 5, "cancelled")],
        selecting=[(7, NOW + 60)]))
    assert seen == [Change(5, 7, "b", "sent", "cancelled")]
    assert queued(a) == [(1, 1, "echo")] and queued(b) == []
    assert list(b.control) == [Cancel(delivery_id=5, reason="cancelled")]
    assert operations.timers.pending(Timer.EXPIRE, 7) == NOW + 60 and operations.timers.pending(Timer.SCHEDULE, 4) is None
    assert operations.selectors.active()
    operations.apply(Effects(None, unselected=[7]))
    assert not operations.selectors.active()


async def test_every_operation_is_observed_after_its_effects_are_applied(operations: Operations) -> None:
    """The one observer point (issue 20's hooks attach there): each operation, once
    committed and applied, with what it was about and its effects."""
    a = await enrolled(operations.store, "a")
    session = online(operations.push, a)
    happened: list[tuple[str, object, int, list[tuple[int, int, str]]]] = []
    operations.after.append(lambda h: happened.append(
        (h.operation, h.subject, len(h.effects.items), queued(session))))

    def broken(h: Happened) -> None:
        raise RuntimeError("an observer's bug")

    operations.after.append(broken)  # logged; the operation stands and later observers run
    spec = task("agent", a)
    created_task = await operations.create_task(spec)
    await operations.untask(task_id=created_task.result)
    (op, subject, items, pushed), (untask, *_) = happened
    assert (op, subject, items) == ("task.create", spec, 1)
    assert pushed == [(created_task.items[0].delivery_id, 1, "echo")]  # observed after the push was queued
    assert untask == "task.cancel"


async def test_an_answered_operation_waits_for_what_its_observers_wrote(operations: Operations) -> None:
    """A console told "task created" can count on the task's after-hook runs surviving a
    crash: ``create_task`` returns only once the observer's write (the outbox) is committed."""
    a = await enrolled(operations.store, "a")
    outbox_write: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    operations.after.append(lambda h: outbox_write if h.operation == "task.create" else None)
    creating = asyncio.create_task(operations.create_task(task("agent", a)))
    for _ in range(20):
        await asyncio.sleep(0)  # every step the operation could take on its own
    assert not creating.done()  # before the change: answered while its hook runs were not yet kept
    outbox_write.set_result(None)
    assert (await asyncio.wait_for(creating, 5)).result == 1


# -- the loop ------------------------------------------------------------------------------


async def test_a_task_for_one_agent_gives_up_its_ttl_entry_when_its_delivery_ends(operations: Operations) -> None:
    """Else every task held a wheel entry for its whole ttl (a week by default): the soak
    benchmark's tetherd grew in proportion to the tasks created (docs/performance.md)."""
    store = operations.store
    a = await enrolled(store, "a")
    one = (await operations.create_task(task("agent", a))).result
    tagged = (await operations.create_task(task("all"))).result
    assert len(operations.timers) == 2
    (item,) = await store.pending_for_agent(a, limit=1)
    operations.apply(await store.record_results(a, [result(item.delivery_id, 1)], NOW))
    assert operations.timers.due(NOW + 60) == [(Timer.EXPIRE, tagged)]  # the one-agent entry is gone
    await operations.load()  # and it is not rebuilt at start
    assert operations.timers.pending(Timer.EXPIRE_ONE, one) is None


async def test_a_due_poll_queues_the_next_run_offers_it_and_arms_the_deadline(operations: Operations) -> None:
    a, task_id, d = await waiting(operations)
    session = online(operations.push, a)
    async with timer_loop(operations):
        change = changed(operations, task_id)
        operations.timers.set(Timer.POLL, d, NEXT)
        clock(operations).advance(NEXT - NOW)
        async with asyncio.timeout(WAIT):
            assert await change == [Change(d, task_id, a, "waiting", "queued")]
            await session.wake.wait()
    assert queued(session) == [(d, 2, "poll_status")]  # run 2, with the scheduled command
    assert operations.timers.pending(Timer.POLL, d) == DEADLINE  # re-armed at the sequence's timeout


async def test_an_early_poll_timer_is_put_back_for_the_next_run(operations: Operations) -> None:
    _, _, d = await waiting(operations)
    fired = operations.fire(Timer.POLL, d, NEXT - 10)
    await handled(fired)
    assert fired.result().timers == [(Timer.POLL, d, NEXT)]
    assert operations.timers.pending(Timer.POLL, d) == NEXT


@pytest.mark.parametrize("pushed", [False, True], ids=["still-queued", "on-the-wire"])
async def test_the_sequence_timeout_withdraws_an_undelivered_run(operations: Operations, pushed: bool) -> None:
    a, task_id, d = await waiting(operations)
    session = online(operations.push, a)
    async with timer_loop(operations):
        change = changed(operations, task_id)
        operations.timers.set(Timer.POLL, d, NEXT)
        clock(operations).advance(NEXT - NOW)
        async with asyncio.timeout(WAIT):
            await change
        if pushed:  # what the session's pusher does with it
            assert [i.delivery_id for i in session._take()] == [d]
        change = changed(operations, task_id)
        clock(operations).advance(DEADLINE - NEXT)  # the wheel holds the deadline
        # a push unacknowledged that long was written as sent meanwhile (SENT_MARK_DELAY)
        async with asyncio.timeout(WAIT):
            assert await change == [Change(d, task_id, a, "sent" if pushed else "queued", "failed")]
    view = await operations.store.get_task(task_id)
    assert view is not None and view.deliveries[0].error == "polling timed out after 120 s"
    if pushed:  # the agent is told to drop run 2
        assert list(session.control) == [Cancel(delivery_id=d, reason="expired")]
    else:  # never pushed: nothing to tell, and it will not be
        assert (list(session.control), session._take()) == ([], [])
    assert operations.timers.pending(Timer.POLL, d) is None


async def test_a_timeout_of_a_waiting_delivery_tells_the_agent_nothing(operations: Operations) -> None:
    a, task_id, d = await waiting(operations)
    session = online(operations.push, a)  # its run's result is in: the agent holds nothing of it
    async with timer_loop(operations):
        change = changed(operations, task_id)
        operations.timers.set(Timer.POLL, d, DEADLINE)
        clock(operations).advance(DEADLINE - NOW)
        async with asyncio.timeout(WAIT):
            assert await change == [Change(d, task_id, a, "waiting", "failed")]
    assert (list(session.control), queued(session), operations.timers.pending(Timer.POLL, d)) == ([], [], None)


async def test_a_schedule_fires_a_task_to_the_online_agent_and_arms_its_timers(operations: Operations) -> None:
    store = operations.store
    a = await enrolled(store, "a")
    session = online(operations.push, a)
    spec = NewSchedule(name="state", command="record --from s", every=300.0, cron=None, timezone="UTC",
                       missed="once", task=task("agent", a, ttl=60))
    sid = (await operations.add_schedule(spec, NOW + 300)).schedule_id
    async with timer_loop(operations):
        clock(operations).advance(300)
        async with asyncio.timeout(WAIT):
            await session.wake.wait()
    view = await store.get_schedule("state")
    assert view is not None and view.fired == 1
    (task_id,) = view.recent_tasks
    ((*_, item),) = session.heap
    assert (item.task_id, item.run, item.command, unpack(item.args)) == (task_id, 1, "record", {"from": "s", "x": 1})
    assert operations.timers.pending(Timer.EXPIRE_ONE, task_id) == NOW + 360  # the task's ttl
    assert operations.timers.pending(Timer.SCHEDULE, sid) == NOW + 600  # the next firing


async def test_the_loop_sleeps_until_the_next_entry_and_wakes_for_an_earlier_one() -> None:
    """An entry: the clock calls the loop back then; one set earlier meanwhile wakes it to
    re-arm for that one."""
    clock = ArmingClock(NOW)
    timers = Timers(clock)
    fired: asyncio.Queue[tuple[Timer, int, float]] = asyncio.Queue()

    def fire(kind: Timer, ident: int, now: float) -> asyncio.Future[None]:
        fired.put_nowait((kind, ident, now))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    timers.set(Timer.EXPIRE, 1, NOW + 100)
    async with asyncio.TaskGroup() as tg:
        loop = tg.create_task(timers.run(fire))
        await clock.waiting()  # asleep until NOW + 100, looking at the clock again within MAX_WAIT
        timers.set(Timer.EXPIRE, 2, NOW + 10)
        await clock.waiting()  # re-armed for the earlier one
        assert clock.arms == [NOW + MAX_WAIT, NOW + 10]
        async with asyncio.timeout(WAIT):
            clock.advance(10)
            assert await fired.get() == (Timer.EXPIRE, 2, NOW + 10)
            assert fired.empty() and timers.pending(Timer.EXPIRE, 1) == NOW + 100
        loop.cancel()


async def test_a_timer_whose_store_operation_fails_is_tried_again(operations: Operations) -> None:
    def poll_due(delivery_id: int, now: float) -> asyncio.Future[Effects[None]]:
        failed: asyncio.Future[Effects[None]] = asyncio.get_running_loop().create_future()
        failed.set_exception(sqlite3.OperationalError("database or disk is full"))
        return failed

    operations.store.poll_due = poll_due  # type: ignore[method-assign]
    fired = operations.fire(Timer.POLL, 4, NOW)
    await handled(fired)
    assert isinstance(fired.exception(), sqlite3.OperationalError)
    assert operations.timers.pending(Timer.POLL, 4) == NOW + RETRY_AFTER_STORE_ERROR


# -- not before its time (issue 19.2) -----------------------------------------------------------


async def test_a_delayed_task_is_not_pushed_before_its_time_and_is_pushed_then() -> None:
    """On the fake clock: the task waits as one wheel entry per delivery (no coroutine sleeps
    for it); the online agent's session is offered nothing while the timer loop looks at the
    clock before its time, and the delivery when the clock reaches it."""
    store, clk = MemoryStore(), ArmingClock(NOW)
    await store.open()
    operations = Operations(store, clk)
    a = await enrolled(store, "a")
    session = online(operations.push, a)
    spec = msgspec.structs.replace(task("agent", a, ttl=3600), delay=600.0)
    async with timer_loop(operations):
        effects = await operations.create_task(spec)
        (item,) = effects.items
        d = item.delivery_id
        assert queued(session) == [] and operations.timers.pending(Timer.POLL, d) == NOW + 600
        change = changed(operations, effects.result)
        await clk.waiting()  # the loop waits on the clock
        clk.advance(599.0)
        await clk.waiting()  # it looked at the clock again, found nothing due, and waits on
        assert not change.done() and queued(session) == []
        assert operations.timers.pending(Timer.POLL, d) == NOW + 600
        clk.advance(1.0)
        async with asyncio.timeout(WAIT):
            assert await change == [Change(d, effects.result, a, "delayed", "queued")]
            await session.wake.wait()
    assert queued(session) == [(d, 1, "echo")]
    assert operations.timers.pending(Timer.POLL, d) is None
    await store.close()


async def test_an_agent_coming_online_before_the_time_is_pushed_nothing(operations: Operations) -> None:
    a = await enrolled(operations.store, "a")
    spec = msgspec.structs.replace(task("agent", a, ttl=3600), delay=60.0, jitter=30.0)
    (item,) = (await operations.create_task(spec)).items
    assert NOW + 60 <= item.not_before <= NOW + 90
    assert await operations.store.pending_for_agent(a) == []  # what a session opening reads
    assert operations.timers.pending(Timer.POLL, item.delivery_id) == item.not_before
