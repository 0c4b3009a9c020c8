"""Polling runs in the store (Cortex XSOAR "Scheduled Commands"), on every backend.

A run's result with a plan makes the delivery wait; ``poll_due`` queues the next run or
ends the sequence at its timeout or the ttl. Times are NOW-relative: the first run's
result is recorded at NOW + 1, so with the default plan (30 s interval, 120 s timeout)
the next run falls due at NOW + 31 and the sequence times out at NOW + 121.
"""

from __future__ import annotations

import msgspec
import pytest
from store_data import NOW, Polled, created, enrolled, polled, result, task, timers, wheel

from tether.daemon.effects import Change, PushItem, Timer
from tether.daemon.schedules import CALENDAR
from tether.daemon.store import NewSchedule, NewTask
from tether.daemon.store.sqlite import SQLiteStore
from tether.protocol import pack
from tether.protocol.console import DeliveryView, HistoryEntry
from tether.protocol.lifecycle import WaitPlan

T1 = NOW + 1
"""When the first run's result is recorded."""
NEXT = T1 + 30
DEADLINE = T1 + 120
TTL = 3600


def plan(*, interval: float = 30.0, timeout: float = 120.0, command: str = "poll_status", note: str = "",
         poll_message: str = "", **args: object) -> WaitPlan:
    return WaitPlan(command=command, args=pack(args or {"job": 7}), interval=interval, timeout=timeout, note=note,
                   poll_message=poll_message)


async def delivery(store: SQLiteStore, *, ttl: int = TTL, hide: bool = False) -> tuple[str, int, int]:
    """An agent, and a task for it whose delivery is acked and running: (agent, task, delivery)."""
    a = await enrolled(store, "a")
    task_id, (item,) = await created(store.create_task(task("agent", a, ttl=ttl, hide_polling_output=hide), NOW))
    d = item.delivery_id
    store.mark_sent([d], NOW)
    await store.acknowledge(a, [(d, 1)], NOW)
    await store.started(a, (d, 1), "working", NOW)
    return a, task_id, d


async def waiting(store: SQLiteStore, *, ttl: int = TTL) -> tuple[str, int, int]:
    """A delivery whose run 1 asked for a next run (the default plan, recorded at T1)."""
    a, task_id, d = await delivery(store, ttl=ttl)
    out = await store.record_results(a, [result(d, {"partial": 1}, plan=plan())], T1)
    assert out.changes == [Change(d, task_id, a, "running", "waiting")]
    return a, task_id, d


async def view(store: SQLiteStore, task_id: int, *, history: bool = False) -> DeliveryView:
    task_view = await store.get_task(task_id, history=history)
    assert task_view is not None
    (only,) = task_view.deliveries
    return only


async def run_again(store: SQLiteStore, a: str, d: int, run: int, now: float) -> None:
    """The agent receives, acknowledges and starts the queued run."""
    store.mark_sent([d], now)
    acked = await store.acknowledge(a, [(d, run)], now)
    assert [c.new for c in acked.changes] == ["acked"]
    await store.started(a, (d, run), "", now)


# -- a run that asks to be run again ---------------------------------------------------------


async def test_a_result_with_a_plan_makes_the_delivery_wait(store: SQLiteStore) -> None:
    a, task_id, d = await delivery(store)
    out = await store.record_results(
        a, [result(d, {"partial": 1}, plan=plan(note="raised", poll_message="Fetching Results:"))], T1)
    assert out.changes == [Change(d, task_id, a, "running", "waiting")]
    assert out.settled == [(d, 1)] and out.refused == []
    assert timers(out, Timer.POLL) == [(d, NEXT)]
    v = await view(store, task_id, history=True)
    assert (v.state, v.run, v.next_run_at, v.poll_deadline) == ("waiting", 1, NEXT, DEADLINE)
    assert v.result is None  # the partial result belongs to the history entry
    assert v.history == [HistoryEntry(run=1, at=T1, state="waiting", partial_result={"partial": 1},
                                      poll_message="Fetching Results:", note="raised", next_run_at=NEXT,
                                      next_command="poll_status", next_args={"job": 7})]
    assert (v.next_command, v.next_args) == ("poll_status", {"job": 7})  # what `show` says the next run runs


async def test_the_timer_is_the_deadline_when_it_comes_before_the_next_run(store: SQLiteStore) -> None:
    a, _, d = await delivery(store)
    out = await store.record_results(a, [result(d, None, plan=plan(interval=300, timeout=60))], T1)
    assert timers(out, Timer.POLL) == [(d, T1 + 60)]


async def test_poll_due_before_the_next_run_looks_again_then(store: SQLiteStore) -> None:
    _, task_id, d = await waiting(store)
    assert polled(await store.poll_due(d, NEXT - 1)) == Polled([], [], NEXT)
    assert (await view(store, task_id)).state == "waiting"


async def test_poll_due_queues_the_next_run_with_the_scheduled_command(store: SQLiteStore) -> None:
    a, task_id, d = await waiting(store)
    out = polled(await store.poll_due(d, NEXT))
    run2 = PushItem(d, task_id, a, "poll_status", pack({"job": 7}), 1, NOW + TTL, 2, DEADLINE, DEADLINE - T1)
    assert out == Polled([Change(d, task_id, a, "waiting", "queued")], [run2], DEADLINE)
    v = await view(store, task_id)
    assert (v.state, v.run, v.next_run_at, v.poll_deadline) == ("queued", 2, None, DEADLINE)
    assert (v.sent_at, v.acked_at, v.progress) == (None, None, "")  # run 1's marks are gone
    assert await store.pending_for_agent(a) == [run2]  # an agent connecting now gets run 2
    task_view = await store.get_task(task_id)
    assert task_view is not None and (task_view.command, task_view.args) == ("echo", {"x": 1})  # the task's own


async def test_reports_about_run_1_after_run_2_is_queued_only_settle(store: SQLiteStore) -> None:
    a, task_id, d = await waiting(store)
    polled(await store.poll_due(d, NEXT))
    for late in (store.acknowledge(a, [(d, 1)], NEXT), store.started(a, (d, 1), "late", NEXT),
                 store.record_results(a, [result(d, {"again": 1})], NEXT)):
        out = await late
        assert (out.changes, out.settled, out.refused, out.timers) == ([], [(d, 1)], [], [])
    v = await view(store, task_id)
    assert (v.state, v.run, v.progress) == ("queued", 2, "")


async def test_a_result_for_the_last_run_ends_the_delivery(store: SQLiteStore) -> None:
    a, task_id, d = await waiting(store)
    polled(await store.poll_due(d, NEXT))
    await run_again(store, a, d, 2, NEXT)
    out = await store.record_results(a, [result(d, {"final": True}, run=2, finished_at=NEXT + 5)], NEXT + 5)
    assert out.changes == [Change(d, task_id, a, "running", "done")] and out.settled == [(d, 2)]
    assert timers(out, Timer.POLL) == []
    v = await view(store, task_id, history=True)
    assert (v.state, v.run, v.result) == ("done", 2, {"final": True})
    assert v.history is not None
    assert [(e.run, e.state, e.by) for e in v.history] == [(1, "waiting", "agent"), (2, "done", "agent")]
    assert v.history[-1].output == {"final": True} and v.history[-1].at == NEXT + 5
    assert polled(await store.poll_due(d, DEADLINE)) == Polled([], [], None)  # a stale timer does nothing


async def test_the_first_schedule_fixes_the_deadline(store: SQLiteStore) -> None:
    a, task_id, d = await waiting(store)
    polled(await store.poll_due(d, NEXT))
    await run_again(store, a, d, 2, NEXT)
    out = await store.record_results(a, [result(d, None, run=2, plan=plan(interval=10, timeout=9999))], NEXT)
    assert timers(out, Timer.POLL) == [(d, NEXT + 10)]
    assert (await view(store, task_id)).poll_deadline == DEADLINE  # not NEXT + 9999
    polled(await store.poll_due(d, NEXT + 10))
    await run_again(store, a, d, 3, NEXT + 10)
    out = await store.record_results(a, [result(d, None, run=3, plan=plan(interval=300))], NEXT + 10)
    assert timers(out, Timer.POLL) == [(d, DEADLINE)]


# -- how a sequence ends without its agent ---------------------------------------------------


async def test_the_daemon_times_a_waiting_sequence_out(store: SQLiteStore) -> None:
    a, task_id, d = await delivery(store)
    await store.record_results(a, [result(d, None, plan=plan(interval=300))], T1)
    out = polled(await store.poll_due(d, DEADLINE))
    assert out == Polled([Change(d, task_id, a, "waiting", "failed")], [], None)
    v = await view(store, task_id, history=True)
    assert (v.state, v.error, v.finished_at) == ("failed", "polling timed out after 120 s", DEADLINE)
    assert v.history is not None and v.history[-1] == HistoryEntry(
        run=1, at=DEADLINE, state="failed", error="polling timed out after 120 s", by="daemon")
    assert await store.pending_for_agent(a) == []


@pytest.mark.parametrize("pushed", [False, True], ids=["queued", "sent"])
async def test_an_undelivered_next_run_times_out_too(store: SQLiteStore, pushed: bool) -> None:
    a, task_id, d = await waiting(store)  # its agent went offline: run 2 is never acknowledged
    polled(await store.poll_due(d, NEXT))
    if pushed:
        store.mark_sent([d], NEXT)
    state = "sent" if pushed else "queued"
    assert polled(await store.poll_due(d, NEXT + 1)) == Polled([], [], DEADLINE)  # woken early
    out = polled(await store.poll_due(d, DEADLINE + 5))
    assert out == Polled([Change(d, task_id, a, state, "failed")], [], None)
    v = await view(store, task_id, history=True)
    assert (v.state, v.run, v.error) == ("failed", 2, "polling timed out after 120 s")
    assert v.started_at is None  # the delivery's times are run 2's, and run 2 never started
    assert v.history is not None and (v.history[-1].by, v.history[-1].run) == ("daemon", 2)
    late = await store.acknowledge(a, [(d, 2)], DEADLINE + 6)  # the agent comes back with run 2
    assert late.changes == []


@pytest.mark.parametrize("started", [False, True], ids=["acked", "running"])
async def test_an_acknowledged_run_is_not_timed_out(store: SQLiteStore, started: bool) -> None:
    a, task_id, d = await waiting(store)
    polled(await store.poll_due(d, NEXT))
    store.mark_sent([d], NEXT)
    await store.acknowledge(a, [(d, 2)], NEXT)
    if started:
        await store.started(a, (d, 2), "", NEXT)
    assert polled(await store.poll_due(d, DEADLINE + 100)) == Polled([], [], None)
    assert (await view(store, task_id)).state == ("running" if started else "acked")
    # The run ends after the deadline asking for another: the sequence is over all the same.
    out = await store.record_results(a, [result(d, None, run=2, plan=plan())], DEADLINE + 100)
    assert timers(out, Timer.POLL) == [(d, DEADLINE)]
    failed = polled(await store.poll_due(d, DEADLINE + 100))
    assert [c.new for c in failed.changes] == ["failed"]


async def test_the_ttl_ends_a_waiting_delivery(store: SQLiteStore) -> None:
    a, task_id, d = await waiting(store)
    changes = (await store.expire_task(task_id, T1 + 50)).changes
    assert changes == [Change(d, task_id, a, "waiting", "expired")]
    v = await view(store, task_id, history=True)
    assert (v.state, v.error) == ("expired", "the task's ttl ended")
    assert v.history is not None
    assert [(e.run, e.state, e.by) for e in v.history] == [(1, "waiting", "agent"), (1, "expired", "daemon")]
    assert v.history[-1].at == T1 + 50  # when the daemon ended it, not when run 1 finished
    assert polled(await store.poll_due(d, NEXT)) == Polled([], [], None)


async def test_a_next_run_due_after_the_ttl_expires(store: SQLiteStore) -> None:
    a, task_id, d = await waiting(store, ttl=20)  # expires at NOW + 20, run 2 due at NOW + 31
    out = polled(await store.poll_due(d, NEXT))
    assert out == Polled([Change(d, task_id, a, "waiting", "expired")], [], None)
    v = await view(store, task_id, history=True)
    assert (v.state, v.error) == ("expired", "the task's ttl ended before run 2 was due")
    assert v.history is not None and v.history[-1].by == "daemon"


async def test_untask_cancels_a_waiting_delivery(store: SQLiteStore) -> None:
    a, task_id, d = await waiting(store)
    untasked = await store.cancel(task_id=task_id, now=T1 + 5)
    changes = untasked.changes
    assert untasked.withdraws == []  # waiting: its last run is over, the agent holds nothing of it
    assert changes == [Change(d, task_id, a, "waiting", "cancelled")]
    v = await view(store, task_id, history=True)
    assert v.history is not None and v.history[-1] == HistoryEntry(run=1, at=T1 + 5, state="cancelled", by="daemon")
    assert v.next_run_at is None  # an ended delivery has no next run
    assert polled(await store.poll_due(d, NEXT)) == Polled([], [], None)


@pytest.mark.parametrize("state", ["queued", "sent"])
async def test_a_plan_result_after_a_lost_ack_still_waits(store: SQLiteStore, state: str) -> None:
    a = await enrolled(store, "a")
    task_id, (item,) = await created(store.create_task(task("agent", a), NOW))
    d = item.delivery_id
    if state == "sent":
        store.mark_sent([d], NOW)
    out = await store.record_results(a, [result(d, {"p": 1}, plan=plan())], T1)
    assert out.changes == [Change(d, task_id, a, state, "waiting")]
    assert timers(out, Timer.POLL) == [(d, NEXT)]
    assert (await view(store, task_id)).state == "waiting"
    # Straight to waiting, in one write: the result is the authority (lifecycle.DELIVERY).
    assert store.stats().entered["waiting"] == 1 and store.stats().entered.get("running", 0) == 0


async def test_a_failed_run_ends_the_sequence(store: SQLiteStore) -> None:
    a, _, d = await waiting(store)
    polled(await store.poll_due(d, NEXT))
    await run_again(store, a, d, 2, NEXT)
    out = await store.record_results(a, [result(d, None, run=2, ok=False, plan=plan())], NEXT)
    assert [c.new for c in out.changes] == ["failed"] and timers(out, Timer.POLL) == []


# -- the history -----------------------------------------------------------------------------


async def sequence(store: SQLiteStore, *, hide: bool) -> tuple[int, list[tuple[object, str]]]:
    """Six runs: five that ask for another (output, note), then one that ends it, no output."""
    runs: list[tuple[object, str]] = [(None, ""), (None, ""), (None, "raised to the floor"), ({"n": 4}, ""),
                                      (None, "")]
    a, task_id, d = await delivery(store, hide=hide)
    now = T1
    for run, (output, note) in enumerate(runs, start=1):
        if run > 1:
            polled(await store.poll_due(d, now))
            await run_again(store, a, d, run, now)
        await store.record_results(
            a, [result(d, output, run=run, plan=plan(interval=10, timeout=1000, note=note), finished_at=now)], now)
        now += 10
    polled(await store.poll_due(d, now))
    await run_again(store, a, d, 6, now)
    await store.record_results(a, [result(d, None, run=6, finished_at=now)], now)
    return task_id, runs


async def test_history_has_one_entry_per_run_then_the_final_one(store: SQLiteStore) -> None:
    task_id, runs = await sequence(store, hide=False)
    v = await view(store, task_id, history=True)
    assert v.history is not None and v.history_hidden == 0
    assert [(e.run, e.state) for e in v.history] == [*((r, "waiting") for r in range(1, 6)), (6, "done")]
    assert [(e.partial_result, e.note) for e in v.history[:-1]] == runs
    assert [e.at for e in v.history] == [T1 + 10 * i for i in range(6)]
    assert [e.next_run_at for e in v.history] == [*(T1 + 10 * i for i in range(1, 6)), None]
    assert (await view(store, task_id)).history is None  # only when asked for


async def test_hide_polling_output_hides_empty_entries_after_the_first(store: SQLiteStore) -> None:
    task_id, _ = await sequence(store, hide=True)
    v = await view(store, task_id, history=True)
    assert v.history is not None
    # Run 1 shows although empty (it gives the context); 2, 3 and 5 carry no partial result
    # (3 only a note); 4 has one; the final entry always shows, output or not (XSOAR).
    assert [(e.run, e.state) for e in v.history] == [(1, "waiting"), (4, "waiting"), (6, "done")]
    assert v.history_hidden == 3


# -- the timer wheel, rebuilt at start -------------------------------------------------------


async def test_timers_lists_what_the_wheel_must_hold(store: SQLiteStore) -> None:
    a = await enrolled(store, "a")

    active: list[int] = []

    async def polling(interval: float) -> int:
        task_id, (item,) = await created(store.create_task(task("agent", a, ttl=TTL), NOW))
        active.append(task_id)
        store.mark_sent([item.delivery_id], NOW)
        await store.record_results(a, [result(item.delivery_id, None, plan=plan(interval=interval))], T1)
        return item.delivery_id

    soon = await polling(30)  # waiting: its next run at T1 + 30
    late = await polling(500)  # waiting: its deadline (T1 + 120) comes first
    undelivered = await polling(30)
    polled(await store.poll_due(undelivered, NEXT))  # run 2 queued: only its deadline is left
    acked = await polling(30)
    polled(await store.poll_due(acked, NEXT))
    store.mark_sent([acked], NEXT)
    await store.acknowledge(a, [(acked, 2)], NEXT)  # its result decides: no timer
    done_task, (done,) = await created(store.create_task(task("agent", a, ttl=TTL), NOW))
    await store.record_results(a, [result(done.delivery_id, 1)], T1)  # one agent's, done: nothing to time
    tag_task, _ = await created(store.create_task(task("all", ttl=TTL), NOW))  # reaches agents enrolled later
    active.append(tag_task)
    cancelled_task, _ = await created(store.create_task(task("agent", a, ttl=TTL), NOW))
    await store.cancel(task_id=cancelled_task, now=T1)
    expired_task, _ = await created(store.create_task(task("agent", a, ttl=TTL), NOW))
    await store.expire_task(expired_task, NOW + TTL)
    every = NewSchedule(name="every", command="echo", task=task("all"), every=300.0, cron=None, timezone="UTC",
                        missed="once")
    on = (await store.add_schedule(every, NOW, NOW + 300)).result
    await store.add_schedule(msgspec.structs.replace(every, name="paused"), NOW, NOW + 300)
    await store.pause_schedule("paused", True, NOW, CALENDAR)

    held = await wheel(store)
    assert sorted(held.polls) == sorted([(soon, T1 + 30), (late, DEADLINE), (undelivered, DEADLINE)])
    assert sorted(held.expiries) == [(t, NOW + TTL, t != tag_task) for t in active]  # not the done,
    # cancelled or expired task
    for now in (NOW + TTL - 1, NOW + TTL):  # one agent's, ended: it reads as its delivery ended, ttl or not
        view = await store.get_task(done_task, now=now)
        assert view is not None and view.state == "done"
    assert held.schedules == [(on.schedule_id, NOW + 300)]


async def test_a_run_may_start_further_sequences_each_a_task_of_its_own(store: SQLiteStore) -> None:
    """XSOAR's Gmail integration schedules one run per batch of mailboxes: each further
    schedule is a delivery of a task of its own for the same agent, waiting for its run 2,
    shown and cancelled with the task that started it."""
    a, task_id, d = await delivery(store)
    r = msgspec.structs.replace(result(d, {"p": 0}, plan=plan()), sequels=[
        (plan(command="batch", interval=60.0, box=2), pack({"p": 2})),
        (plan(command="batch", interval=90.0, box=3), pack(None))])
    out = await store.record_results(a, [r], T1)
    shown = await store.get_task(task_id, history=True)
    assert shown is not None
    own, second, third = shown.deliveries
    assert [(x.state, x.next_run_at, x.next_command, x.next_args) for x in (own, second, third)] == [
        ("waiting", NEXT, "poll_status", {"job": 7}), ("waiting", T1 + 60, "batch", {"box": 2}),
        ("waiting", T1 + 90, "batch", {"box": 3})]
    assert second.task_id != task_id != third.task_id and second.agent_id == a
    assert second.history is not None and second.history[0].partial_result == {"p": 2}
    assert sorted(timers(out, Timer.POLL)) == sorted([(d, NEXT), (second.delivery_id, T1 + 60), (third.delivery_id, T1 + 90)])
    assert sorted(t for t, _ in timers(out, Timer.EXPIRE_ONE)) == sorted([second.task_id, third.task_id])
    cancelled = await store.cancel(task_id=task_id, now=T1 + 5)
    assert sorted(c.delivery_id for c in cancelled.changes) == sorted([d, second.delivery_id, third.delivery_id])


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


# -- not before its time: a task's delay and jitter (issue 19.2) -------------------------------


def delayed_task(kind: str = "agent", target: str = "", *, delay: float = 600.0, jitter: float = 0.0) -> NewTask:
    return msgspec.structs.replace(task(kind, target, ttl=TTL), delay=delay, jitter=jitter)


async def test_a_delayed_delivery_waits_on_the_wheel_and_is_queued_at_its_time(store: SQLiteStore) -> None:
    a = await enrolled(store, "a")
    task_id, (item,) = await created(store.create_task(delayed_task("agent", a), NOW))
    d = item.delivery_id
    assert item.not_before == NOW + 600  # a timer for then, not a push
    assert await store.pending_for_agent(a) == []  # a session opening now pushes nothing
    assert (await wheel(store)).polls == [(d, NOW + 600)]  # rebuilt at a restart too
    view = await store.get_task(task_id)
    assert view is not None and (view.delay, view.jitter) == (600.0, 0.0)
    assert [(v.state, v.next_run_at) for v in view.deliveries] == [("delayed", NOW + 600)]
    early = polled(await store.poll_due(d, NOW + 599))
    assert (early.changes, early.items, early.timer) == ([], [], NOW + 600)
    due = polled(await store.poll_due(d, NOW + 600))
    assert due.changes == [Change(d, task_id, a, "delayed", "queued")] and due.timer is None
    assert [(i.delivery_id, i.run, i.not_before) for i in due.items] == [(d, 1, 0.0)]
    assert [i.delivery_id for i in await store.pending_for_agent(a)] == [d]
    assert (await wheel(store)).polls == []


async def test_the_ttl_still_bounds_a_delayed_delivery_and_untask_cancels_it(store: SQLiteStore) -> None:
    a = await enrolled(store, "a")
    late, (item,) = await created(store.create_task(delayed_task("agent", a, delay=TTL - 1, jitter=0.5), NOW))
    expired = await store.expire_task(late, NOW + TTL)
    assert [(c.old, c.new) for c in expired.changes] == [("delayed", "expired")] and expired.withdraws == []
    other, (item,) = await created(store.create_task(delayed_task("agent", a), NOW))
    untasked = await store.cancel(task_id=other, now=NOW + 1)
    assert [(c.old, c.new) for c in untasked.changes] == [("delayed", "cancelled")] and untasked.withdraws == []
    assert polled(await store.poll_due(item.delivery_id, NOW + 600)).changes == []  # a late timer changes nothing


async def test_jitter_is_drawn_per_agent_and_an_agent_tagged_later_is_held_from_the_tasks_creation(
        store: SQLiteStore) -> None:
    agents = [await enrolled(store, name, "web") for name in ("a", "b", "c", "d")]
    _, items = await created(store.create_task(delayed_task("tag", "web", delay=60.0, jitter=300.0), NOW))
    assert sorted(i.agent_id for i in items) == sorted(agents)
    times = [i.not_before for i in items]
    assert all(NOW + 60 <= t <= NOW + 360 for t in times) and len(set(times)) == 4
    late = await enrolled(store, "late", "web")  # enrolled 0 s after: still before the delay's end
    (held,) = [i for i in (await store.timers()).timers if i[0] is Timer.POLL and i[1] not in
               {x.delivery_id for x in items}]
    assert NOW + 60 <= held[2] <= NOW + 360 and await store.pending_for_agent(late) == []
    # A task whose delay passed before an agent came: that agent gets it at once.
    _, old = await created(store.create_task(delayed_task("tag", "db", delay=10.0), NOW))
    assert old == []
    later = await store.tag_add(agents[0], "db", NOW + 11)
    assert [(i.agent_id, i.not_before) for i in later.items] == [(agents[0], 0.0)]
