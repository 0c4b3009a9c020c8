"""A run's result as the daemon hands it to the store (``reports.checked_result``): its
schedule checked against the polling rules, or the sequence ended saying why."""

from __future__ import annotations

import math

import pytest

from tether.daemon.reports import checked_result
from tether.daemon.store import ResultIn
from tether.protocol import pack, unpack
from tether.protocol.frames import Result, Schedule
from tether.protocol.lifecycle import WaitPlan

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
