"""Regressions from reviewing the polling work: each test failed before its fix."""

from __future__ import annotations

import asyncio
from typing import Any

from sessions_data import online
from store_data import NOW, created, enrolled, result, task, timers

from tether.daemon.clock import SystemClock
from tether.daemon.effects import Change, Effects, PushItem, Timer
from tether.daemon.operations import Operations
from tether.daemon.rpc import ConsoleRPC
from tether.daemon.schedules import missed_between
from tether.daemon.store import Timing
from tether.daemon.store.sqlite import SQLiteStore
from tether.protocol import ErrorCode, pack
from tether.protocol.console import DeliveryView, TaskView
from tether.protocol.lifecycle import WaitPlan


async def test_a_number_too_large_for_sqlite_neither_kills_the_writer_nor_its_group(sqlite_store: SQLiteStore) -> None:
    store = sqlite_store
    a = await enrolled(store, "a")
    _, (item,) = await created(store.create_task(task("agent", a), NOW))
    huge = await store.acknowledge(a, [(2**63, 1), (item.delivery_id, 1)], NOW)
    assert [(r.delivery_id, r.code) for r in huge.refused] == [(2**63, ErrorCode.UNKNOWN_DELIVERY)]
    assert huge.settled == [(item.delivery_id, 1)]

    def broken(tx: Any) -> None:
        raise OverflowError("Python int too large to convert to SQLite INTEGER")

    outcomes = await asyncio.gather(store._submit(broken), store.create_task(task("agent", a), NOW),
                                    return_exceptions=True)
    assert "the operation failed" in str(outcomes[0])
    assert not isinstance(outcomes[1], BaseException)  # its neighbour in the group committed
    await store.flush()  # and the writer still answers


async def test_a_run_that_asks_for_more_after_the_ttl_is_looked_at_at_once(store: SQLiteStore) -> None:
    a = await enrolled(store, "a")
    _, (item,) = await created(store.create_task(task("agent", a, ttl=60), NOW))
    d = item.delivery_id
    await store.acknowledge(a, [(d, 1)], NOW)
    plan = WaitPlan(command="poll", args=pack({}), interval=3600.0, timeout=7200.0)
    out = await store.record_results(a, [result(d, None, plan=plan)], NOW + 70)
    assert timers(out, Timer.POLL) == [(d, NOW + 60)]  # the ttl, not the hour: the next run could never be delivered
    ended = await store.poll_due(d, NOW + 70)
    assert [(c.old, c.new) for c in ended.changes] == [("waiting", "expired")]


class _SnapshotStore:
    """get_task's snapshot is taken, then the change commits and is notified, then it returns."""

    def __init__(self) -> None:
        self.state = "running"
        self.gate: asyncio.Future[None] | None = None
        self.reading = asyncio.Event()

    async def get_task(self, task_id: int, history: bool = False, now: float | None = None) -> TaskView:
        snapshot = self.state
        self.reading.set()
        if self.gate is not None:
            await self.gate
            self.gate = None
        return TaskView(task_id=1, command="c", args={}, target="all", priority=1, ttl=60, created_at=0.0,
                        expires_at=60.0, state="active",
                        deliveries=[DeliveryView(delivery_id=1, agent_id="a", state=snapshot, updated_at=0.0)])


async def test_wait_sees_a_change_that_commits_while_it_reads() -> None:
    store = _SnapshotStore()
    operations = Operations(store, SystemClock())  # type: ignore[arg-type]
    rpc = ConsoleRPC(operations)
    emitted: list[Any] = []

    async def emit(topic: str, data: Any) -> None:
        emitted.append(data)

    first_read = asyncio.get_running_loop().create_future()
    store.gate = first_read
    waiter = asyncio.create_task(rpc.call("task.wait", {"task_id": 1, "timeout": 30}, emit))
    await asyncio.wait_for(store.reading.wait(), 5)  # the wait has registered and is reading
    store.state = "done"
    operations.apply(Effects(None, changes=[Change(1, 1, "a", "running", "done")]))
    first_read.set_result(None)  # the read returns its stale snapshot
    view = await asyncio.wait_for(waiter, 5)  # before the fix: only at the 30 s timeout
    assert view.deliveries[0].state == "done" and len(emitted) == 1


async def test_a_delivery_ended_while_the_session_reads_its_queue_is_not_pushed(store: SQLiteStore) -> None:
    session = online(Operations(store, SystemClock()).push, "a")
    listed = [PushItem(d, d, "a", "echo", pack({}), 1, NOW + 60) for d in (1, 2)]
    session.cancel(1, "expired")  # committed meanwhile; the listing read before it
    session.offer_loaded(listed)
    assert sorted(session.queued_ids) == [2]
    session.cancel(2, "cancelled")  # later, the usual way: withdrawn from the queue
    assert session.queued_ids == set() and session.ended_while_loading is None


def test_missed_cron_firings_are_counted_with_one_iterator() -> None:
    every_minute = Timing(every=None, cron="* * * * *", timezone="UTC", anchor=0.0)
    due = 1_800_000_000.0 - 1_800_000_000.0 % 60
    assert missed_between(every_minute, due, due + 30 * 86_400) == 30 * 1440 + 1
