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
from tether.daemon.store import ResultIn
from tether.daemon.store.sqlite import SQLiteStore
from tether.protocol import JSON, MSGPACK, Response, decode_from_daemon, pack, unpack
from tether.protocol.frames import Ack, Result, Schedule
from tether.protocol.lifecycle import WaitPlan
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


OUTPUT = pack({"status": "pending"})


FLOOR = 10.0


def frame(schedule: Schedule | None = None, *, ok: bool = True, error: str = "") -> Result:
    return Result(delivery_id=5, ok=ok, error=error, started_at=100.0, finished_at=101.5, run=3, schedule=schedule)


def test_a_result_without_a_schedule_passes_through_with_its_run() -> None:
    assert checked_result(frame(), OUTPUT, FLOOR) == ResultIn(
        delivery_id=5, ok=True, output=OUTPUT, started_at=100.0, finished_at=101.5, run=3)
    failed = checked_result(frame(ok=False, error="boom"), OUTPUT, FLOOR)
    assert (failed.ok, failed.error, failed.plan) == (False, "boom", None)


def test_a_schedule_becomes_the_plan_of_the_next_run() -> None:
    schedule = Schedule(command="poll_status", next_run_in_seconds=30, args={"job": 7, "deep": [1, {"a": None}]},
                        timeout_in_seconds=120, poll_message="Fetching Results:")
    checked = checked_result(frame(schedule), OUTPUT, FLOOR)
    assert (checked.ok, checked.output, checked.run, checked.error) == (True, OUTPUT, 3, "")
    assert checked.plan is not None
    assert unpack(checked.plan.args) == {"job": 7, "deep": [1, {"a": None}]}  # MessagePack, as the store keeps args
    assert checked.plan == WaitPlan(command="poll_status", args=checked.plan.args, interval=30.0, timeout=120.0,
                                   poll_message="Fetching Results:")


def test_an_interval_below_the_floor_is_raised_and_the_history_says_so() -> None:
    checked = checked_result(frame(Schedule(command="poll", next_run_in_seconds=2)), OUTPUT, FLOOR)
    assert checked.plan is not None
    assert (checked.plan.interval, checked.plan.note) == (10.0, "next run asked for in 2 s; raised to the 10 s floor")
    lowered = checked_result(frame(Schedule(command="poll", next_run_in_seconds=2)), OUTPUT, 0.5)  # min_interval
    assert lowered.plan is not None and (lowered.plan.interval, lowered.plan.note) == (2.0, "")


def test_no_timeout_means_xsoars_default_of_600_s() -> None:
    checked = checked_result(frame(Schedule(command="poll", next_run_in_seconds=30)), OUTPUT, FLOOR)
    assert checked.plan is not None and checked.plan.timeout == 600.0


@pytest.mark.parametrize(
    ("schedule", "reason"),
    [
        (Schedule(command="poll", next_run_in_seconds=math.nan), "next_run_in_seconds must be a finite number"),
        (Schedule(command="poll", next_run_in_seconds=math.inf), "next_run_in_seconds must be a finite number"),
        (Schedule(command="poll", next_run_in_seconds=1e12), "next_run_in_seconds of 1e+12 s is more than a year"),
        (Schedule(command="poll", next_run_in_seconds=30, timeout_in_seconds=-5), "timeout_in_seconds must be more"),
        (Schedule(command="  ", next_run_in_seconds=30), "the schedule names no command"),
    ],
)
def test_a_schedule_that_cannot_be_honoured_fails_the_run_saying_why(schedule: Schedule, reason: str) -> None:
    checked = checked_result(frame(schedule), OUTPUT, FLOOR)
    assert (checked.ok, checked.plan, checked.output, checked.run) == (False, None, OUTPUT, 3)
    assert checked.error.startswith("invalid schedule: ") and reason in checked.error


def test_a_failed_result_ignores_its_schedule() -> None:
    """XSOAR: an error result ends the sequence, whatever it schedules."""
    checked = checked_result(frame(Schedule(command="poll", next_run_in_seconds=-1), ok=False, error="denied"),
                             OUTPUT, FLOOR)
    assert (checked.ok, checked.error, checked.plan) == (False, "denied", None)
