"""What a parsed tetherctl command line sends: the method and its params, checked locally.

Each command is bound to the methods it calls (the declarations of
:mod:`tether.protocol.methods`, never a method name pieced together from the command line).
Nothing is sent for input the daemon would refuse anyway: the params are checked by the
same code the daemon checks them with (:func:`tether.protocol.methods.parse_params`).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any, NamedTuple

from tether.protocol import flags, methods
from tether.protocol.actions import action_to_request
from tether.protocol.cmdline import parse_command_line
from tether.protocol.methods import Bindings, Method, find, parse_params

from . import hooks
from .client import ConsoleError


class Request(NamedTuple):
    """What one tetherctl invocation sends, and whose result comes back."""

    method: str
    """The ``req`` frame's method: a method's name, or ``action`` for an action object."""
    params: dict[str, Any]
    answers: Method
    """The method that answers: itself, or the one an action object is translated to."""


Command = Callable[[argparse.Namespace], tuple[Method, dict[str, Any]]]
"""A command's plan: the method it calls (one of those it is bound to) and its params."""

plans: Bindings[Command] = Bindings("plan")
"""The command that calls each method: ``plans[methods.TASK_CREATE]`` (one per method, none missing:
a test checks)."""

COMMANDS: dict[str, Command] = {}
"""Each tetherctl command but ``action``, by name: its plan."""


def command(name: str, *calls: Method) -> Callable[[Command], Command]:
    """Make the function the plan of the command ``name``, which calls the methods ``calls``."""
    def bind(function: Command) -> Command:
        COMMANDS[name] = function
        return plans(*calls)(function)

    return bind


def plan(args: argparse.Namespace) -> Request:
    """The request a parsed command line sends, validated locally: nothing is sent for
    input the daemon would refuse anyway."""
    if args.cmd == "action":
        text = args.stdin.read() if args.object == "-" else args.object
        obj = _json_arg(text, "the action")
        name, params = action_to_request(obj)
        parse_params(name, params)  # what the daemon would refuse anyway
        return Request("action", obj, find(name))
    method, params = COMMANDS[args.cmd](args)
    parse_params(method.name, params)
    return Request(method.name, params, method)


def _json_arg(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConsoleError(f"{what} is not valid JSON: {exc}") from None


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


# -- agents and tags -------------------------------------------------------------------------


@command("agents", methods.AGENTS_LIST)
def _agents(args: argparse.Namespace) -> tuple[Method, dict[str, Any]]:
    params: dict[str, Any] = {"online": args.online}
    if args.offline:
        params["offline"] = True
    if args.stale is not None:
        params["stale"] = args.stale
    if args.all:
        params["all"] = True
    if args.tag is not None:
        params["tag"] = args.tag
    return methods.AGENTS_LIST, params


@command("tag", methods.TAG_ADD, methods.TAG_RM)
def _tag(args: argparse.Namespace) -> tuple[Method, dict[str, Any]]:
    return {"add": methods.TAG_ADD, "rm": methods.TAG_RM}[args.op], {"agent_id": args.agent_id, "tag": args.tag}


_AGENT_BY_OP = {"revoke": methods.AGENT_REVOKE, "rm": methods.AGENT_RM, "approve": methods.AGENT_APPROVE,
                "merge": methods.AGENT_MERGE}


@command("agent", methods.AGENT_GET, *_AGENT_BY_OP.values())
def _agent(args: argparse.Namespace) -> tuple[Method, dict[str, Any]]:
    if args.op == "show":
        return methods.AGENT_GET, {"agent_id": args.agent_id, "changes": args.changes}
    return _AGENT_BY_OP[args.op], {"agent_id": args.agent_id}


# -- agents' configuration -------------------------------------------------------------------


def config_value(text: str) -> Any:
    """A ``KEY=VALUE``'s value: a number, true or false when it reads as one in JSON (or a
    JSON string, to keep text that would), otherwise the text as it is."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return text
    return value if isinstance(value, bool | int | float | str) else text


def _pairs(pairs: list[str]) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConsoleError(f"{pair!r} is not KEY=VALUE (e.g. state_interval=5m)")
        settings[key] = config_value(value)
    return settings


@command("config", methods.CONFIG_SET, methods.CONFIG_UNSET, methods.CONFIG_GET, methods.CONFIG_DRIFT)
def _config(args: argparse.Namespace) -> tuple[Method, dict[str, Any]]:
    if args.op == "show":
        return methods.CONFIG_GET, {"agent_id": args.agent_id}
    if args.op == "drift":
        return methods.CONFIG_DRIFT, {}
    target = {"tag": args.tag} if args.tag is not None else {"agent": args.agent}
    if args.op == "set":
        return methods.CONFIG_SET, {**target, "settings": _pairs(args.pairs)}
    return methods.CONFIG_UNSET, {**target, "keys": args.pairs}


# -- tasks -----------------------------------------------------------------------------------


@command("task", methods.TASK_CREATE)
def _task(args: argparse.Namespace) -> tuple[Method, dict[str, Any]]:
    params = {"command": args.command, "args": _task_args(args), **_target(args), "priority": args.priority}
    if args.ttl is not None:
        params["ttl"] = args.ttl
    if args.show_polling_output:
        params["show_polling_output"] = True
    if args.context is not None:
        params["investigation_id"] = args.context
    for name in ("delay", "jitter"):
        if getattr(args, name) is not None:
            params[name] = getattr(args, name)
    return methods.TASK_CREATE, params


@command("tasks", methods.TASK_LIST)
def _tasks(args: argparse.Namespace) -> tuple[Method, dict[str, Any]]:
    params = _target(args)
    if args.state is not None:
        params["state"] = args.state
    if args.limit is not None:
        params["limit"] = args.limit
    return methods.TASK_LIST, params


@command("show", methods.TASK_GET)
def _show(args: argparse.Namespace) -> tuple[Method, dict[str, Any]]:
    params: dict[str, Any] = {"task_id": args.task_id}
    if args.history:
        params["history"] = True
    return methods.TASK_GET, params


@command("wait", methods.TASK_WAIT)
def _wait(args: argparse.Namespace) -> tuple[Method, dict[str, Any]]:
    params: dict[str, Any] = {"task_id": args.task_id}
    if args.timeout is not None:
        params["timeout"] = args.timeout
    return methods.TASK_WAIT, params


@command("watch", methods.TASK_WATCH)
def _watch(args: argparse.Namespace) -> tuple[Method, dict[str, Any]]:
    params: dict[str, Any] = {"task_id": args.task_id}
    if args.timeout is not None:
        params["timeout"] = args.timeout
    return methods.TASK_WATCH, params


@command("alerts", methods.ALERTS_LIST, methods.ALERT_GET, methods.ALERT_ACK)
def _alerts(args: argparse.Namespace) -> tuple[Method, dict[str, Any]]:
    if args.op is not None:
        if args.alert_id is None:
            raise ConsoleError(f"alerts {args.op} needs the alert's ID (see: tetherctl alerts)")
        return {"show": methods.ALERT_GET, "ack": methods.ALERT_ACK}[args.op], {"alert_id": args.alert_id}
    if args.alert_id is not None:
        raise ConsoleError(f"an alert ID goes with show or ack: tetherctl alerts show {args.alert_id}")
    params: dict[str, Any] = {}
    for name, value in (("agent", args.agent), ("kind", args.kind), ("within", args.since), ("limit", args.limit)):
        if value is not None:
            params[name] = value
    return methods.ALERTS_LIST, params


@command("untask", methods.TASK_CANCEL)
def _untask(args: argparse.Namespace) -> tuple[Method, dict[str, Any]]:
    params = _target(args)
    if args.task_id is not None:
        params["task_id"] = args.task_id
    return methods.TASK_CANCEL, params


# -- recurring schedules ---------------------------------------------------------------------

_SCHEDULE_BY_NAME = {"show": methods.SCHEDULE_GET, "pause": methods.SCHEDULE_PAUSE,
                     "resume": methods.SCHEDULE_RESUME, "rm": methods.SCHEDULE_RM}


@command("schedule", methods.SCHEDULE_ADD, methods.SCHEDULE_LIST, *_SCHEDULE_BY_NAME.values())
def _schedule(args: argparse.Namespace) -> tuple[Method, dict[str, Any]]:
    if args.op == "list":
        return methods.SCHEDULE_LIST, {}
    if args.op != "add":
        return _SCHEDULE_BY_NAME[args.op], {"name": args.name}
    params = {"name": args.name, "command": args.command, "args": _task_args(args), **_target(args),
              "priority": args.priority, "missed": args.missed, "timezone": args.tz}
    params.update({"every": args.every} if args.every is not None else {"cron": args.cron})
    if args.ttl is not None:
        params["ttl"] = args.ttl
    if args.show_polling_output:
        params["show_polling_output"] = True
    return methods.SCHEDULE_ADD, params


# -- credentials -----------------------------------------------------------------------------


def _create(what: str, args: argparse.Namespace) -> tuple[Method, dict[str, Any]]:
    """``key create`` / ``token create``: the request ``tetherd key|token create`` serves on
    the data directory, of the same flags (:data:`tether.protocol.flags.CREDENTIALS`)."""
    credential = flags.CREDENTIALS[what]
    return credential.method, credential.params(args)


@command("token", methods.TOKEN_CREATE, methods.TOKEN_LIST, methods.TOKEN_REVOKE)
def _token(args: argparse.Namespace) -> tuple[Method, dict[str, Any]]:
    if args.op == "create":
        return _create("token", args)
    return (methods.TOKEN_LIST, {}) if args.op == "list" else (methods.TOKEN_REVOKE, {"token_id": args.id})


@command("key", methods.KEY_CREATE, methods.KEY_LIST, methods.KEY_REVOKE)
def _key(args: argparse.Namespace) -> tuple[Method, dict[str, Any]]:
    if args.op == "create":
        return _create("key", args)
    return (methods.KEY_LIST, {}) if args.op == "list" else (methods.KEY_REVOKE, {"key_id": args.id})


command("hooks", *hooks.PLAN_METHODS)(hooks.plan)  # tetherctl hooks: in console/hooks.py
