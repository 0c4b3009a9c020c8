"""What an agent's message becomes (``reports.submit_reports``): as few store operations as
keep its order, applied on commit; on SQLite (it counts the operations) and a fake clock."""

from __future__ import annotations

import math
from typing import Any

import msgspec
import pytest
from sessions_data import online
from store_data import NOW, created, enrolled, task

from tether.daemon.clock import FakeClock
from tether.daemon.operations import Operations
from tether.daemon.reports import checked_result, submit_reports
from tether.daemon.rpc import ConsoleRPC
from tether.daemon.store.sqlite import SQLiteStore
from tether.protocol import JSON, MSGPACK, Response, decode_from_daemon, pack, unpack
from tether.protocol.frames import Ack, Result, Schedule
from tether.protocol.values import MAX_DEPTH, output_problem


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


def deep(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"k": value}
    return value


async def _noop(topic: str, data: Any) -> None:
    raise AssertionError("task.get sends no events")


async def recorded(store: SQLiteStore, frame: Result, output: bytes) -> dict[str, Any]:
    """Record ``frame`` for a fresh delivery as the daemon does, then read the task back as a
    JSON console would be sent it (``tetherctl show``)."""
    agent = await enrolled(store, "a")
    task_id, (item,) = await created(store.create_task(task("agent", agent), NOW))
    await store.acknowledge(agent, [(item.delivery_id, 1)], NOW)
    frame = msgspec.structs.replace(frame, delivery_id=item.delivery_id)
    outcome = await store.record_results(agent, [checked_result(frame, output, 10.0)], NOW + 1)
    assert outcome.settled == [(item.delivery_id, 1)] and not outcome.refused  # the agent may forget it
    view = await ConsoleRPC(Operations(store, FakeClock(NOW))).call(
        "task.get", {"task_id": task_id, "history": True}, _noop, "viewer")
    sent = decode_from_daemon(JSON.encode(Response(id=1, result=view)).decode())
    assert isinstance(sent, Response)
    delivery: dict[str, Any] = sent.result["deliveries"][0]
    return delivery


@pytest.mark.parametrize(("output", "why"), [
    ({"x": msgspec.msgpack.Ext(1, b"\x00")}, "JSON cannot hold it"),
    ({None: 1}, "JSON cannot hold it"),
    ({(1, 2): 1}, "JSON cannot hold it"),
    (deep(MAX_DEPTH + 1), f"nested more than {MAX_DEPTH} deep"),
])
async def test_an_output_no_json_console_could_be_sent_fails_the_delivery_saying_why(
    store: SQLiteStore, output: Any, why: str
) -> None:
    """Was recorded as it came; then every answer about its task failed to encode, and the
    console's session crashed (a traceback in the log) or could not decode the answer."""
    delivery = await recorded(store, Result(delivery_id=0, ok=True), MSGPACK.encode_value(output))
    assert delivery["state"] == "failed" and delivery["result"] is None
    assert delivery["error"].startswith("invalid output: ") and why in delivery["error"]


@pytest.mark.parametrize("output", [
    {"n": 1, "text": "é\x00", "list": [1.5, None, True]}, deep(MAX_DEPTH), b"\x00\x01", {1: "int key"}, math.nan,
    2**64 - 1,
])
async def test_an_output_json_can_write_is_kept(store: SQLiteStore, output: Any) -> None:
    delivery = await recorded(store, Result(delivery_id=0, ok=True), MSGPACK.encode_value(output))
    assert delivery["state"] == "done" and delivery["error"] == ""
    assert delivery["result"] == JSON.decode_value(JSON.encode_value(output))  # as JSON writes it


async def test_an_output_that_is_not_messagepack_fails_the_delivery(store: SQLiteStore) -> None:
    """A JSON text result in a MessagePack session: its output was read as MessagePack and
    shown as null, the result reported committed."""
    delivery = await recorded(store, Result(delivery_id=0, ok=True), b'{"json": "text"}')
    assert (delivery["state"], delivery["error"]) == ("failed", "invalid output: it is not valid MessagePack")


def test_an_output_nested_past_the_decoders_limit_is_refused_without_a_recursion_error() -> None:
    assert output_problem(b"\x91" * 100_000 + b"\x90") == f"lists and objects nested more than {MAX_DEPTH} deep"


@pytest.mark.parametrize("when", [math.nan, math.inf, -math.inf])
async def test_a_result_time_that_is_not_a_number_is_left_to_the_daemons_clock(store: SQLiteStore,
                                                                                when: float) -> None:
    """A NaN finished_at reached SQLite as NULL ("NOT NULL constraint failed: history.at"): the
    agent was told "storage unavailable" and its result was never recorded."""
    delivery = await recorded(store, Result(delivery_id=0, ok=True, started_at=when, finished_at=when), pack(7))
    assert (delivery["state"], delivery["result"]) == ("done", 7)
    assert delivery["finished_at"] == NOW + 1 and delivery["started_at"] is None
    polling = await recorded(store, Result(delivery_id=0, ok=True, finished_at=when,
                                           schedule=Schedule(command="echo", next_run_in_seconds=30)), pack(None))
    assert polling["state"] == "waiting" and polling["history"][0]["at"] == NOW + 1


@pytest.mark.parametrize(("args", "why"), [
    ({"n": 2**64}, "an integer beyond 64 bits at `$.n`"),
    ({"x": msgspec.msgpack.Ext(1, b"x")}, "not a JSON value at `$.x`"),
    ({"d": deep(MAX_DEPTH)}, f"nested more than {MAX_DEPTH} deep"),
])
def test_a_next_run_whose_args_a_task_could_not_have_ends_the_sequence(args: dict[str, Any], why: str) -> None:
    """The next run's args are pushed to the agent as a task's: held to the same rules as a
    console's task args. One nested ~1000 deep was pushed in a frame the agent could not read."""
    checked = checked_result(Result(delivery_id=5, ok=True, schedule=Schedule(
        command="poll", next_run_in_seconds=30, args=args)), pack(None), 10.0)
    assert checked.ok is False and checked.plan is None
    assert checked.error.startswith("invalid schedule: the args hold ") and why in checked.error
    assert unpack(checked.output) is None
