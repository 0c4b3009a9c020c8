"""What an agent's message becomes (``reports.submit_reports``): as few store operations as
keep its order, applied on commit; on SQLite (it counts the operations) and a fake clock."""

from __future__ import annotations

from sessions_data import online
from store_data import NOW, created, enrolled, task

from tether.daemon.clock import FakeClock
from tether.daemon.operations import Operations
from tether.daemon.reports import submit_reports
from tether.daemon.store.sqlite import SQLiteStore
from tether.protocol import MSGPACK
from tether.protocol.frames import Ack, Result


async def test_an_ack_and_result_in_one_message_are_one_store_operation(sqlite_store: SQLiteStore) -> None:
    store = sqlite_store
    a = await enrolled(store, "a")
    _, (item,) = await created(store.create_task(task("agent", a), NOW))
    _, (other,) = await created(store.create_task(task("agent", a), NOW))
    d, e = item.delivery_id, other.delivery_id
    operations = Operations(store, FakeClock(NOW + 2))
    session = online(operations.push, a)
    session.offer([item, other])
    assert {i.delivery_id for i in session._take()} == {d, e}
    pushed_at = session.in_flight[d][1]

    async def report(*frames: object) -> int:
        """How many store operations the message's frames became."""
        ops = store.stats().commit_ops
        assert submit_reports(session, MSGPACK, list(frames), operations, 10.0) == 0  # type: ignore[arg-type]
        await store.flush()  # the reports' callbacks ran before this returns: their futures resolved first
        return store.stats().commit_ops - ops - 1  # less the flush's own

    done = Result(delivery_id=d, run=1, ok=True, output=MSGPACK.encode_value({"n": 1}), started_at=NOW + 1,
                  finished_at=NOW + 1)
    assert await report(Ack(delivery_ids=[d], runs=[1]), done) == 1
    assert await report(Ack(delivery_ids=[e], runs=[1])) == 1  # an ack alone is written as before
    assert session.committed == [(d, 1)] and session.in_flight == {}
    by_id = {dv.delivery_id: dv for t in (item.task_id, other.task_id)
             for dv in (await store.get_task(t)).deliveries}  # type: ignore[union-attr]
    assert (by_id[d].state, by_id[d].sent_at, by_id[d].acked_at) == ("done", pushed_at, NOW + 2)
    assert (by_id[e].state, by_id[e].sent_at, by_id[e].acked_at) == ("acked", pushed_at, NOW + 2)
