"""Acks: the usual one (a queued run, pushed moments ago) is one UPDATE with no read, and
writes the push time as ``sent_at``; every other case takes the checked path and comes out
as it always did."""

from __future__ import annotations

from store_data import NOW, created, enrolled, result, task

from tether.daemon.store.sqlite import SQLiteStore
from tether.protocol import ErrorCode, pack
from tether.protocol.lifecycle import WaitPlan


async def test_a_quick_ack_records_the_push_time_and_one_state_change(store: SQLiteStore) -> None:
    a = await enrolled(store, "a")
    _, (item,) = await created(store.create_task(task("agent", a), NOW))
    d = item.delivery_id
    out = await store.acknowledge(a, [(d, 1)], NOW + 2, {d: NOW + 1})
    assert [(c.delivery_id, c.task_id, c.old, c.new) for c in out.changes] == [(d, item.task_id, "queued", "acked")]
    assert out.settled == [(d, 1)] and out.refused == []
    view = await store.get_task(item.task_id)
    assert view is not None
    (dv,) = view.deliveries
    assert (dv.state, dv.sent_at, dv.acked_at) == ("acked", NOW + 1, NOW + 2)
    assert store.stats().entered.get("sent", 0) == 0 and store.stats().entered["acked"] == 1


async def test_a_mixed_ack_gives_what_each_run_is_due(store: SQLiteStore) -> None:
    a = await enrolled(store, "a")
    b = await enrolled(store, "b")
    _, (quick,) = await created(store.create_task(task("agent", a), NOW))
    _, (marked,) = await created(store.create_task(task("agent", a), NOW))
    _, (other,) = await created(store.create_task(task("agent", b), NOW))
    _, (done,) = await created(store.create_task(task("agent", a), NOW))
    store.mark_sent([marked.delivery_id], NOW)  # unacknowledged for a while: written as sent
    await store.acknowledge(a, [(done.delivery_id, 1)], NOW)
    refs = [(quick.delivery_id, 1), (quick.delivery_id, 1), (marked.delivery_id, 1), (other.delivery_id, 1),
            (done.delivery_id, 1), (quick.delivery_id + 1000, 1), (marked.delivery_id, 2)]
    out = await store.acknowledge(a, refs, NOW + 1, {quick.delivery_id: NOW + 0.5})
    assert sorted((c.delivery_id, c.old, c.new) for c in out.changes) == [
        (quick.delivery_id, "queued", "acked"), (marked.delivery_id, "sent", "acked")]
    assert sorted(out.settled) == sorted([(quick.delivery_id, 1), (marked.delivery_id, 1), (done.delivery_id, 1)])
    assert sorted((r.delivery_id, r.code) for r in out.refused) == sorted([
        (other.delivery_id, ErrorCode.FORBIDDEN), (quick.delivery_id + 1000, ErrorCode.UNKNOWN_DELIVERY),
        (marked.delivery_id, ErrorCode.ILLEGAL_TRANSITION)])
    views = {d.agent_id + str(t): d for t in (quick.task_id, marked.task_id, other.task_id)
             for d in ((await store.get_task(t)).deliveries)}  # type: ignore[union-attr]
    assert views[a + str(quick.task_id)].sent_at == NOW + 0.5
    assert views[a + str(marked.task_id)].sent_at == NOW  # its own mark, kept
    assert views[b + str(other.task_id)].state == "queued"  # another agent's ack moved nothing


async def test_a_result_that_brings_its_ack_writes_both_in_one_state_change(store: SQLiteStore) -> None:
    """An idle agent sends a quick command's ack and result in one message: the result's
    write records the ack as well (its times kept), and the delivery goes from queued (or
    sent) straight to its end, or to waiting for a polling one."""
    a = await enrolled(store, "a")
    items = [(await created(store.create_task(task("agent", a), NOW)))[1][0] for _ in range(3)]
    ids = [i.delivery_id for i in items]
    quick, marked, polling = ids
    store.mark_sent([marked], NOW)  # unacknowledged for a while: written as sent
    plan = WaitPlan(command="poll", args=pack({}), interval=30.0, timeout=120.0)
    results = [result(quick, 1), result(marked, 2), result(polling, None, plan=plan)]
    out = await store.record_results(a, results, NOW + 2, {d: NOW + 1 for d in ids})
    assert sorted((c.delivery_id, c.old, c.new) for c in out.changes) == [
        (quick, "queued", "done"), (marked, "sent", "done"), (polling, "queued", "waiting")]
    seen = {dv.delivery_id: dv for i in items for dv in (await store.get_task(i.task_id)).deliveries}  # type: ignore[union-attr]
    assert (seen[quick].sent_at, seen[quick].acked_at) == (NOW + 1, NOW + 2)
    assert (seen[marked].sent_at, seen[marked].acked_at) == (NOW, NOW + 2)  # its own mark, kept
    assert (seen[polling].state, seen[polling].sent_at, seen[polling].acked_at) == ("waiting", NOW + 1, NOW + 2)
    assert store.stats().entered.get("acked", 0) == 0
