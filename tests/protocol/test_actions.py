"""LimaCharlie reliable-tasking action objects -> console requests."""

from __future__ import annotations

from typing import Any

import pytest

from tether.protocol import ErrorCode, ProtocolError
from tether.protocol.actions import action_to_request
from tether.protocol.methods import parse_params


@pytest.mark.parametrize(
    ("action", "method", "params"),
    [
        ({"action": "task", "task": "os_version"}, "task.create", {"command": "os_version", "all": True}),
        ({"action": "task", "task": "os_version", "sid": "a1"}, "task.create", {"command": "os_version", "agent": "a1"}),
        ({"action": "task", "task": "file_get --path /x", "tag": "web", "ttl": 60},
         "task.create", {"command": "file_get --path /x", "tag": "web", "ttl": 60}),
        ({"action": "task", "task": "scan", "sid": "a1", "priority": "urgent", "args": {"deep": True}},
         "task.create", {"command": "scan", "agent": "a1", "priority": 3, "args": {"deep": True}}),
        ({"action": "task", "task": "scan", "priority": 0}, "task.create", {"command": "scan", "all": True, "priority": 0}),
        ({"action": "task", "task": "scan", "priority": "extreme"},
         "task.create", {"command": "scan", "all": True, "priority": "extreme"}),
        ({"action": "list"}, "task.list", {}),
        ({"action": "list", "sid": "a1"}, "task.list", {"agent": "a1"}),
        ({"action": "list", "tag": "web", "state": "all"}, "task.list", {"tag": "web", "state": "all"}),
        ({"action": "untask", "task_id": 12}, "task.cancel", {"task_id": 12}),
        ({"action": "untask", "sid": "a1"}, "task.cancel", {"agent": "a1"}),
        ({"action": "untask", "tag": "web"}, "task.cancel", {"tag": "web"}),
        # what python-limacharlie's `task reliable-send | reliable-list | reliable-delete` send
        ({"action": "task", "task": "os_version", "sid": "a1", "inv_id": "case-7", "ttl": 3600},
         "task.create", {"command": "os_version", "agent": "a1", "investigation_id": "case-7", "ttl": 3600}),
        ({"action": "untask", "sid": "a1", "task_id": "12"}, "task.cancel", {"agent": "a1", "task_id": "12"}),
        # and the extension requests of its D&R rule conversion, and its older SDK
        ({"action": "task", "task": "os_version", "selector": "plat == windows", "context": "ir-1"},
         "task.create", {"command": "os_version", "selector": "plat == windows", "investigation_id": "ir-1"}),
        ({"action": "task", "task": "os_version", "context": "x", "inv_id": "x"},
         "task.create", {"command": "os_version", "all": True, "investigation_id": "x"}),
        ({"action": "task", "task": "os_version", "sid": "*"}, "task.create", {"command": "os_version", "all": True}),
        ({"action": "task", "task": "os_version", "plat": "linux"},
         "task.create", {"command": "os_version", "selector": "plat == linux"}),
        ({"action": "list", "selector": '"prod" in tags'}, "task.list", {"selector": '"prod" in tags'}),
        ({"action": "list", "sid": "*"}, "task.list", {}),
        ({"action": "untask", "selector": "plat == linux", "task_id": 3},
         "task.cancel", {"selector": "plat == linux", "task_id": 3}),
        ({"action": "untask", "selector": "plat == linux"}, "task.cancel", {"selector": "plat == linux"}),
        ({"action": "untask", "sid": "*", "task_id": 3}, "task.cancel", {"task_id": 3}),
    ],
)
def test_translations(action: dict[str, Any], method: str, params: dict[str, Any]) -> None:
    assert action_to_request(action) == (method, params)


def test_translated_requests_are_valid_params() -> None:
    for action in ({"action": "task", "task": "os_version", "tag": "web", "priority": "high"},
                   {"action": "list", "sid": "a1"}, {"action": "untask", "task_id": 3}):
        parse_params(*action_to_request(action))


def test_task_ids_as_strings_are_numbers_to_the_daemon() -> None:
    parsed = parse_params(*action_to_request({"action": "untask", "sid": "a1", "task_id": "12"}))
    assert (parsed.task_id, parsed.agent) == (12, "a1")  # type: ignore[attr-defined]
    assert parse_params("task.get", {"task_id": " 7 "}).task_id == 7  # type: ignore[attr-defined]


def test_an_unknown_priority_name_is_refused_when_the_params_are_checked() -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_params(*action_to_request({"action": "task", "task": "scan", "priority": "extreme"}))
    assert caught.value.code is ErrorCode.INVALID_PARAMS


@pytest.mark.parametrize(
    ("action", "message"),
    [
        ([{"action": "list"}], "an action is a JSON object, not list"),
        ("list", "an action is a JSON object, not str"),
        (None, "an action is a JSON object, not NoneType"),
        ({}, "unknown action None: use one of task, list, untask"),
        ({"action": "delete"}, "unknown action 'delete'"),
        ({"action": "LIST"}, "unknown action 'LIST'"),
        ({"action": "list", "task": "x"}, "action 'list' does not take task"),
        ({"action": "untask", "task_id": 1, "ttl": 5, "zz": 1}, "action 'untask' does not take ttl, zz"),
        ({"action": "task", "sid": "a1"}, 'a task action needs "task"'),
        ({"action": "task", "task": ["os_version"]}, 'a task action needs "task"'),
        ({"action": "task", "task": "x", "sid": "a1", "tag": "t"}, "give one target, not sid and tag"),
        ({"action": "task", "task": "x", "sid": 5}, "sid must be a non-empty string"),
        ({"action": "task", "task": "x", "plat": "linux; rm"}, "plat must be a platform name"),
        ({"action": "task", "task": "x", "context": "a", "inv_id": "b"}, "context and inv_id name the same thing"),
        ({"action": "task", "task": "x", "context": 5}, "context must be a string"),
        ({"action": "untask"}, "an untask action needs task_id, or a target"),
        ({"action": "task", "task": "x", "ttl": float("nan")}, "the action object holds"),
        ({"action": "untask", "sid": "*"}, "an untask action needs task_id, or a target"),
        ({"action": "signal_attempt", "sid": "a1"}, "unknown action 'signal_attempt'"),
    ],
)
def test_refused_actions(action: Any, message: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        action_to_request(action)
    assert caught.value.code is ErrorCode.INVALID_ACTION
    assert message in caught.value.message
