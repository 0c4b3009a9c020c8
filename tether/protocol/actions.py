"""LimaCharlie reliable-tasking action objects, translated to console requests.

Accepted (``sid`` is LimaCharlie's sensor id, our agent id)::

    {"action": "task",   "task": "os_version", "sid": ID | "tag": T, "ttl": S, "priority": P}
    {"action": "list",   "sid": ID | "tag": T}
    {"action": "untask", "task_id": N | "sid": ID | "tag": T}

A task without ``sid`` or ``tag`` goes to every agent, as in LimaCharlie.
"""

from __future__ import annotations

from typing import Any

from .console import PRIORITIES
from .errors import ErrorCode, ProtocolError
from .values import value_problem

_ALLOWED = {
    "task": {"action", "task", "sid", "tag", "ttl", "priority", "args"},
    "list": {"action", "sid", "tag", "state"},
    "untask": {"action", "task_id", "sid", "tag"},
}


def _bad(message: str) -> ProtocolError:
    return ProtocolError(ErrorCode.INVALID_ACTION, message)


def action_to_request(obj: Any) -> tuple[str, dict[str, Any]]:
    """Return ``(method, params)`` for an action object, or raise INVALID_ACTION."""
    if not isinstance(obj, dict):
        raise _bad(f"an action is a JSON object, not {type(obj).__name__}")
    problem = value_problem(obj)
    if problem is not None:
        raise _bad(f"the action object holds {problem}")
    action = obj.get("action")
    if not isinstance(action, str) or action not in _ALLOWED:
        raise _bad(f"unknown action {action!r}: use one of task, list, untask")
    unknown = sorted(set(obj) - _ALLOWED[action])
    if unknown:
        raise _bad(f"action {action!r} does not take {', '.join(unknown)}")
    target: dict[str, Any] = {}
    if "sid" in obj:
        target["agent"] = obj["sid"]
    if "tag" in obj:
        target["tag"] = obj["tag"]
    if action == "task":
        if not isinstance(obj.get("task"), str):
            raise _bad("a task action needs \"task\": the command line to run")
        params: dict[str, Any] = {"command": obj["task"], **target}
        if not target:
            params["all"] = True
        if "ttl" in obj:
            params["ttl"] = obj["ttl"]
        if "args" in obj:
            params["args"] = obj["args"]
        if "priority" in obj:
            p = obj["priority"]
            params["priority"] = PRIORITIES.get(p, p) if isinstance(p, str) else p
        return "task.create", params
    if action == "list":
        if "state" in obj:
            target["state"] = obj["state"]
        return "task.list", target
    if "task_id" in obj:
        target["task_id"] = obj["task_id"]
    return "task.cancel", target
