"""What an agent reports about itself (``protocol/agent_state.py``): which facts are a
change, and the bounds a report is refused beyond (an enrolled agent is not trusted)."""

from __future__ import annotations

import msgspec
import pytest

from tether.protocol import MSGPACK, ErrorCode, ProtocolError, decode_to_daemon
from tether.protocol.agent_state import MAX_DISKS, MAX_TEXT, TRACKED, AgentState, Disk, LastTask, changes
from tether.protocol.frames import StateReport

STATE = AgentState(agent_version="1.0", os="Ubuntu", os_version="22.04", platform="linux-x86_64", hostname="h",
                   boot_time=1000.0, uptime=5.0, disks=[Disk(mount="/", total=10, used=1)], memory_total=64,
                   memory_used=32, commands=["b", "a"], tasks_run=1, last_task=LastTask(command="echo", at=2.0))


def test_a_first_report_is_no_change_and_an_equal_one_neither() -> None:
    assert changes(None, STATE) == []
    assert changes(STATE, STATE) == []


def test_gauges_are_no_change() -> None:
    gauges = msgspec.structs.replace(STATE, uptime=99.0, memory_used=1, tasks_run=7, disks=[Disk(mount="/", total=10)],
                                     last_task=None)
    assert changes(STATE, gauges) == []


@pytest.mark.parametrize(("fact", "value", "old", "new"), [
    ("agent_version", "1.1", "1.0", "1.1"),
    ("os", "Debian", "Ubuntu", "Debian"),
    ("os_version", "24.04", "22.04", "24.04"),
    ("platform", "linux-arm64", "linux-x86_64", "linux-arm64"),
    ("hostname", "h2", "h", "h2"),
    ("boot_time", 2000.0, 1000.0, 2000.0),
    ("memory_total", 128, 64, 128),
    ("disks", [Disk(mount="/", total=10), Disk(mount="/data", total=5)], {"/": 10}, {"/": 10, "/data": 5}),
    ("commands", ["a", "c"], ["a", "b"], ["a", "c"]),
])
def test_each_tracked_fact_that_changed_is_one_change(fact: str, value: object, old: object, new: object) -> None:
    assert changes(STATE, msgspec.structs.replace(STATE, **{fact: value})) == [(fact, old, new)]
    assert fact in TRACKED


def test_commands_in_another_order_are_no_change() -> None:
    assert changes(STATE, msgspec.structs.replace(STATE, commands=["a", "b"])) == []


def report(**state: object) -> bytes:
    return msgspec.msgpack.encode({"t": "state", "state": state})


@pytest.mark.parametrize(("state", "where"), [
    ({"hostname": "x" * (MAX_TEXT + 1)}, "$.state.hostname"),
    ({"uptime": float("nan")}, "$.state.uptime"),
    ({"boot_time": float("inf")}, "$.state.boot_time"),
    ({"memory_total": -1}, "$.state.memory_total"),
    ({"disks": [{"mount": "/"}] * (MAX_DISKS + 1)}, "$.state.disks"),
    ({"disks": [{"mount": "/", "used": 2**63}]}, "$.state.disks[0].used"),
    ({"last_task": {"command": "c" * 300}}, "$.state.last_task.command"),
    ({"commands": [1]}, "$.state.commands[0]"),
])
def test_a_report_past_a_bound_is_refused_before_it_is_used(state: dict[str, object], where: str) -> None:
    with pytest.raises(ProtocolError) as refused:
        decode_to_daemon(report(**state))
    assert refused.value.code is ErrorCode.INVALID_FRAME and refused.value.message.endswith(f"at `{where}`")


def test_a_report_round_trips() -> None:
    assert decode_to_daemon(MSGPACK.encode(StateReport(state=STATE))) == StateReport(state=STATE)
