"""What a parsed tetherctl command line sends: the method and its params, checked locally.

Nothing is sent for input the daemon would refuse anyway: the params are checked by the
same code the daemon checks them with (:func:`tether.protocol.console.parse_params`).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from tether.protocol import console as rpc
from tether.protocol import flags
from tether.protocol.actions import action_to_request
from tether.protocol.cmdline import parse_command_line

from .client import ConsoleError


def _task_args(args: argparse.Namespace) -> dict[str, Any]:
    task_args = _json_arg(args.args, "--args") if args.args is not None else {}
    if not isinstance(task_args, dict):
        raise ConsoleError(f"--args must be a JSON object, not {type(task_args).__name__}: {args.args}")
    parse_command_line(args.command)  # the daemon splits it; refuse bad quoting here
    return task_args


def _target(args: argparse.Namespace) -> dict[str, Any]:
    target: dict[str, Any] = {}
    if args.agent is not None:
        target["agent"] = args.agent
    if args.tag is not None:
        target["tag"] = args.tag
    if getattr(args, "selector", None) is not None:
        target["selector"] = args.selector
    if getattr(args, "all", False):
        target["all"] = True
    return target


def _json_arg(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConsoleError(f"{what} is not valid JSON: {exc}") from None


def plan(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """The request a parsed command line sends, validated locally: nothing is sent for
    input the daemon would refuse anyway."""
    cmd = args.cmd
    params: dict[str, Any]
    if cmd == "agents":
        method, params = "agents.list", {"online": args.online}
        if args.all:
            params["all"] = True
        if args.tag is not None:
            params["tag"] = args.tag
    elif cmd == "tag":
        method, params = f"tag.{args.op}", {"agent_id": args.agent_id, "tag": args.tag}
    elif cmd == "task":
        method = "task.create"
        params = {"command": args.command, "args": _task_args(args), **_target(args), "priority": args.priority}
        if args.ttl is not None:
            params["ttl"] = args.ttl
        if args.show_polling_output:
            params["show_polling_output"] = True
        if args.context is not None:
            params["investigation_id"] = args.context
    elif cmd == "schedule" and args.op == "add":
        method = "schedule.add"
        params = {"name": args.name, "command": args.command, "args": _task_args(args), **_target(args),
                  "priority": args.priority, "missed": args.missed, "timezone": args.tz}
        params.update({"every": args.every} if args.every is not None else {"cron": args.cron})
        if args.ttl is not None:
            params["ttl"] = args.ttl
        if args.show_polling_output:
            params["show_polling_output"] = True
    elif cmd == "schedule":
        method = {"list": "schedule.list", "show": "schedule.get"}.get(args.op, f"schedule.{args.op}")
        params = {} if args.op == "list" else {"name": args.name}
    elif cmd in ("token", "key"):
        method = f"{cmd}.{args.op}"
        if args.op == "revoke":
            params = {f"{cmd}_id": args.id}
        elif args.op == "list":
            params = {}
        elif cmd == "token":
            params = flags.token_params(args)
        else:
            params = flags.key_params(args)
    elif cmd == "agent":
        method, params = f"agent.{args.op}", {"agent_id": args.agent_id}
    elif cmd == "tasks":
        method, params = "task.list", _target(args)
        if args.state is not None:
            params["state"] = args.state
        if args.limit is not None:
            params["limit"] = args.limit
    elif cmd == "show":
        method, params = "task.get", {"task_id": args.task_id}
        if args.history:
            params["history"] = True
    elif cmd == "wait":
        method, params = "task.wait", {"task_id": args.task_id}
        if args.timeout is not None:
            params["timeout"] = args.timeout
    elif cmd == "untask":
        method, params = "task.cancel", _target(args)
        if args.task_id is not None:
            params["task_id"] = args.task_id
    else:  # action
        text = args.stdin.read() if args.object == "-" else args.object
        obj = _json_arg(text, "the action")
        rpc.parse_params(*action_to_request(obj))  # what the daemon would refuse anyway
        return "action", obj
    rpc.parse_params(method, params)
    return method, params
