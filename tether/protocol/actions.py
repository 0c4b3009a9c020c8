"""LimaCharlie reliable-tasking action objects, translated to console requests.

Accepted as LimaCharlie's clients send them (python-limacharlie's ``task reliable-send``,
``reliable-list`` and ``reliable-delete``, and the extension requests its D&R rule
conversion writes); ``sid`` is LimaCharlie's sensor id, our agent id::

    {"action": "task",   "task": "os_version", "sid": ID | "tag": T | "selector": S | "plat": P,
                         "ttl": S, "context": C | "inv_id": C, "priority": P, "args": {...}}
    {"action": "list",   "sid": ID | "tag": T | "selector": S | "plat": P, "state": STATE}
    {"action": "untask", "task_id": N, "sid": ID | "tag": T | "selector": S | "plat": P}

A task without a target goes to every agent, as does ``"sid": "*"`` (python-limacharlie's
"'*' for all"). ``task_id`` may be a number or a string of digits (the client sends a
string). ``untask`` with ``task_id`` and a target cancels that task for those agents only;
with a target alone, everything pending for them. ``plat`` is short for the selector
``plat == P``. ``context`` and ``inv_id`` (the older name) are the investigation id kept
with the task and shown with its results.
"""

from __future__ import annotations

from typing import Any

from .console import PRIORITIES
from .errors import ErrorCode, ProtocolError
from .methods import TASK_CANCEL, TASK_CREATE, TASK_LIST
from .values import value_problem

_TARGETS = {"sid", "tag", "selector", "plat"}
_ALLOWED = {
    "task": {"action", "task", "ttl", "priority", "args", "context", "inv_id", *_TARGETS},
    "list": {"action", "state", *_TARGETS},
    "untask": {"action", "task_id", *_TARGETS},
}


def _bad(message: str) -> ProtocolError:
    return ProtocolError(ErrorCode.INVALID_ACTION, message)


def _target(obj: dict[str, Any]) -> dict[str, Any]:
    given = sorted(_TARGETS & set(obj))
    if len(given) > 1:
        raise _bad(f"give one target, not {' and '.join(given)}")
    if not given:
        return {}
    name = given[0]
    value = obj[name]
    if not isinstance(value, str) or not value:
        raise _bad(f"{name} must be a non-empty string, not {value!r}")
    if name == "sid":
        return {"all": True} if value == "*" else {"agent": value}
    if name == "plat":
        if not value.replace("_", "").isalnum():
            raise _bad(f"plat must be a platform name such as windows, linux or macos, not {value!r}")
        return {"selector": f"plat == {value}"}
    return {name: value}


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
    target = _target(obj)
    if action == "task":
        if not isinstance(obj.get("task"), str):
            raise _bad("a task action needs \"task\": the command line to run")
        params: dict[str, Any] = {"command": obj["task"], **(target or {"all": True})}
        if "context" in obj and "inv_id" in obj and obj["context"] != obj["inv_id"]:
            raise _bad("context and inv_id name the same thing (the investigation id): give one")
        investigation = obj.get("context", obj.get("inv_id"))
        if investigation is not None:
            if not isinstance(investigation, str):
                raise _bad(f"context must be a string, not {investigation!r}")
            params["investigation_id"] = investigation
        for key in ("ttl", "args"):
            if key in obj:
                params[key] = obj[key]
        if "priority" in obj:
            p = obj["priority"]
            params["priority"] = PRIORITIES.get(p, p) if isinstance(p, str) else p
        return TASK_CREATE.name, params
    if action == "list":
        if target.get("all"):
            target = {}
        if "state" in obj:
            target["state"] = obj["state"]
        return TASK_LIST.name, target
    if target.get("all"):
        target = {}
    if "task_id" in obj:
        target["task_id"] = obj["task_id"]
    elif not target:
        raise _bad("an untask action needs task_id, or a target (sid, tag, selector or plat), or both")
    return TASK_CANCEL.name, target
