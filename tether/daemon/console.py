"""tetherctl: the admin console of tetherd.

tetherctl opens a ``console`` session (JSON text frames, see ``docs/protocol.md``) with an
admin token and sends one request per invocation. It depends only on the standard library,
msgspec, websockets and :mod:`tether.protocol`, so it runs on any machine that has the
agent's dependencies, without the daemon extra.

Every command prints a readable table, or the daemon's raw result with ``--json``.
The server URL and the token come from ``--server``/``--token`` or the environment
variables ``TETHER_URL``/``TETHER_TOKEN``; for a wss:// server signed by a private CA,
``--ca FILE`` or ``TETHER_CA`` names the CA to trust.

Exit codes:

* ``0``   ok
* ``1``   the task failed (``wait``: a delivery failed, expired or was cancelled)
* ``2``   bad input, or an error answered by the daemon (``error: NAME (CODE): MESSAGE``)
* ``3``   cannot connect, the daemon refused the handshake (e.g. ``unauthorized (4010)``),
  or the session ended before the answer
* ``124`` ``wait`` timed out: some delivery has not finished
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import textwrap
from collections.abc import Callable, Sequence
from typing import Any, TextIO, cast

import msgspec

import tether
from tether.protocol import ErrorCode, ProtocolError, flags
from tether.protocol import console as rpc
from tether.protocol.actions import action_to_request
from tether.protocol.cmdline import parse_command_line
from tether.protocol.endpoints import url_problem
from tether.protocol.frames import Event
from tether.protocol.lifecycle import FILTERS, DeliveryState
from tether.protocol.tags import RULE

from .console_client import (
    DEFAULT_URL,
    EXIT_INPUT,
    EXIT_OK,
    EXIT_TIMEOUT,
    CannotConnect,
    ConsoleClient,
    ConsoleError,
    DaemonError,
    RequestError,
    SessionClosed,
)
from .console_render import (
    fmt_priority,
    fmt_time,
    json_text,
    progress_line,
    render_agents,
    render_deliveries,
    render_keys,
    render_schedule,
    render_schedules,
    render_table,
    render_task,
    render_tokens,
    visible,
    visible_lines,
    wait_outcome,
)

__all__ = [
    "CannotConnect", "ConsoleClient", "ConsoleError", "DaemonError", "RequestError", "SessionClosed",
    "build_parser", "fmt_priority", "fmt_time", "main", "progress_line", "render_agents",
    "render_deliveries", "render_table", "render_task", "run", "wait_outcome",
]

EXIT_CODES = """\
exit codes:
  0    ok
  2    bad input, or an error answered by the daemon
  3    cannot connect, or the daemon refused the handshake (e.g. unauthorized)
"""
WAIT_EXIT_CODES = """\
exit codes:
  0    every delivery is done
  1    a delivery failed, expired or was cancelled
  2    bad input, or an error answered by the daemon
  3    cannot connect, or the daemon refused the handshake (e.g. unauthorized)
  124  --timeout passed first (some delivery has not finished)
"""
ENVIRONMENT = """\
environment:
  TETHER_URL    default for --server (else ws://127.0.0.1:8765)
  TETHER_TOKEN  default for --token
  TETHER_CA     default for --ca
"""
EXIT_CODES_HELP = WAIT_EXIT_CODES.replace("every delivery is done", "ok (wait: every delivery is done)") + \
    "\n" + ENVIRONMENT
"""The top-level --help's epilog: every exit code and variable; each command shows its own."""


def _epilog(*examples: str, codes: str = EXIT_CODES) -> str:
    """A command's --help epilog: its examples, its exit codes, the environment it reads."""
    return f"{flags.examples(*examples)}\n{codes}\n{ENVIRONMENT}"


# -- the command line ----------------------------------------------------------------------


Render = Callable[[Any, argparse.Namespace], int]


def _print_raw(result: Any, out: TextIO) -> None:
    print(json_text(result, sort_keys=False), file=out)


class _TerminalSafe:
    """What tetherctl writes to a stream, with the characters a terminal would act on
    escaped (:func:`~.console_render.visible_lines`): the last guard for agent text that a
    renderer did not escape itself (newlines and tabs pass: renderers lay text out with them)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        return self._stream.write(visible_lines(text))

    def flush(self) -> None:
        self._stream.flush()


def _show(render: Callable[[Any], str]) -> Render:
    def show(result: Any, args: argparse.Namespace) -> int:
        print(render(result), file=args.stdout)
        return EXIT_OK

    return show


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _show_created(result: Any, args: argparse.Namespace) -> int:
    created = msgspec.convert(result, rpc.TaskCreated)
    print(created.task_id, file=args.stdout)
    print(f"task {created.task_id}: {_count(created.deliveries, 'delivery', 'deliveries')} queued", file=args.stderr)
    if created.note:
        print(f"note: {visible(created.note)}", file=args.stderr)
    return EXIT_OK


def _show_schedule_added(result: Any, args: argparse.Namespace) -> int:
    print(render_schedule(result), file=args.stdout)
    note = msgspec.convert(result, rpc.ScheduleView).note
    if note:
        print(f"note: {visible(note)}", file=args.stderr)
    return EXIT_OK


def _show_cancelled(result: Any, args: argparse.Namespace) -> int:
    cancelled = msgspec.convert(result, rpc.Cancelled)
    line = f"cancelled {_count(cancelled.cancelled, 'delivery', 'deliveries')}"
    tag, task_id = getattr(args, "tag", None), getattr(args, "task_id", None)
    if getattr(args, "agent", None) is not None:
        line += f" of agent {args.agent}"
    elif tag is not None:
        line += f" of agents tagged {tag!r} and of tasks aimed at it"
    if cancelled.tasks:
        what = f"task {task_id}" if task_id is not None and cancelled.tasks == 1 else \
            _count(cancelled.tasks, "task", "tasks") + (f" aimed at tag {tag!r}" if tag is not None else "")
        line += f"; closed {what} ({'it reaches' if cancelled.tasks == 1 else 'they reach'} no new agent)"
    print(visible(line), file=args.stdout)
    return EXIT_OK


def _show_tag(result: Any, args: argparse.Namespace) -> int:
    done = "added to" if args.op == "add" else "removed from"
    line = f"tag {args.tag!r} {done} agent {args.agent_id}"
    if isinstance(result, dict) and isinstance(result.get("new_deliveries"), int):
        line += f" ({_count(result['new_deliveries'], 'delivery', 'deliveries')} of tag tasks queued)"
    print(line, file=args.stdout)
    return EXIT_OK


def _show_wait(result: Any, args: argparse.Namespace) -> int:
    if not args.json:
        print(render_task(result), file=args.stdout)
    outcome = wait_outcome(result)
    if outcome == EXIT_TIMEOUT:
        task = msgspec.convert(result, rpc.TaskView)
        open_ = sum(not DeliveryState(d.state).terminal for d in task.deliveries)
        print(f"wait: timed out after {args.timeout:g} s: {open_} of "
              f"{_count(len(task.deliveries), 'delivery', 'deliveries')} of task {task.task_id} not finished "
              f"(exit {EXIT_TIMEOUT}; see tetherctl show {task.task_id})", file=args.stderr)
    return outcome


def _show_task(result: Any, args: argparse.Namespace) -> int:
    print(render_task(result, history=getattr(args, "history", False)), file=args.stdout)
    return EXIT_OK


def _show_removed(result: Any, args: argparse.Namespace) -> int:
    print(f"schedule {args.name!r} removed (the tasks it created stay)", file=args.stdout)
    return EXIT_OK


def _show_secret(what: str, field: str) -> Render:
    """Print a new secret alone on stdout (for scripts), and what it is on stderr."""

    def show(result: Any, args: argparse.Namespace) -> int:
        print(result[field], file=args.stdout)
        print(f"{what} {result[field + '_id']} created; it is shown only this once (tetherd keeps a SHA-256 "
              "digest)", file=args.stderr)
        return EXIT_OK

    return show


def _show_revoked(result: Any, args: argparse.Namespace) -> int:
    revoked = msgspec.convert(result, rpc.Revoked)
    what = {"token": f"admin token {getattr(args, 'id', '')}", "key": f"enrollment key {getattr(args, 'id', '')}",
            "agent": f"agent {getattr(args, 'agent_id', '')}"}[args.cmd]
    line = f"{what} revoked" if revoked.revoked else f"{what} was already revoked"
    if revoked.sessions_closed:
        line += f"; {_count(revoked.sessions_closed, 'open session', 'open sessions')} closed"
    print(line, file=args.stdout)
    return EXIT_OK


def _show_resolved(result: Any, args: argparse.Namespace) -> int:
    done = msgspec.convert(result, rpc.AgentResolved)
    line = {"approved": f"agent {done.agent_id} approved: an agent of its own, no longer a possible clone",
            "merged": f"agent {done.agent_id} merged into agent {done.into}: it has that id, tags and deliveries "
                      "from its next session",
            "removed": f"agent {done.agent_id} removed"}[done.outcome]
    if done.cancelled:
        line += f"; {_count(done.cancelled, 'unfinished delivery', 'unfinished deliveries')} of its own cancelled"
    if done.sessions_closed:
        line += f"; {_count(done.sessions_closed, 'open session', 'open sessions')} closed"
    print(line, file=args.stdout)
    return EXIT_OK


RENDER: dict[str, Render] = {
    "agents.list": _show(render_agents),
    "tag.add": _show_tag,
    "tag.rm": _show_tag,
    "task.create": _show_created,
    "task.list": _show(render_deliveries),
    "task.get": _show_task,
    "task.wait": _show_wait,
    "task.cancel": _show_cancelled,
    "schedule.add": _show_schedule_added,
    "schedule.list": _show(render_schedules),
    "schedule.get": _show(render_schedule),
    "schedule.pause": _show(render_schedule),
    "schedule.resume": _show(render_schedule),
    "schedule.rm": _show_removed,
    "token.create": _show_secret("admin token", "token"),
    "token.list": _show(render_tokens),
    "token.revoke": _show_revoked,
    "key.create": _show_secret("enrollment key", "key"),
    "key.list": _show(render_keys),
    "key.revoke": _show_revoked,
    "agent.revoke": _show_revoked,
    "agent.approve": _show_resolved,
    "agent.merge": _show_resolved,
    "agent.rm": _show_resolved,
}


def _priority(text: str) -> int:
    if text in rpc.PRIORITIES:
        return rpc.PRIORITIES[text]
    if text.isdigit() and int(text) in rpc.PRIORITY_NAMES:
        return int(text)
    raise argparse.ArgumentTypeError(f"invalid priority {text!r}: use low, medium, high or urgent (or 0-3)")


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


def _render_for(method: str, params: dict[str, Any]) -> Render:
    if method == "action":
        method, _ = action_to_request(params)
    return RENDER[method]


def _add_common(p: argparse.ArgumentParser, *, top: bool) -> None:
    # On the top parser these carry the defaults; on subcommands they are SUPPRESSed so
    # `tetherctl agents --server URL` and `tetherctl --server URL agents` both work.
    default: Any = argparse.SUPPRESS
    p.add_argument("--server", metavar="URL", help="daemon URL, ws:// or wss:// (env TETHER_URL)",
                   **({"default": None} if top else {"default": default}))
    p.add_argument("--token", help="admin token (env TETHER_TOKEN)",
                   **({"default": None} if top else {"default": default}))
    p.add_argument("--ca", metavar="FILE",
                   help="PEM CA certificates to trust for a wss:// server instead of the system's store "
                        "(env TETHER_CA)", **({"default": None} if top else {"default": default}))
    p.add_argument("--json", action="store_true", help="print the daemon's raw result as JSON",
                   **({"default": False} if top else {"default": default}))


def build_parser() -> argparse.ArgumentParser:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="tetherctl",
        description="The admin console of tetherd: agents, tags, tasks and recurring schedules.",
        epilog=EXIT_CODES_HELP,
        formatter_class=formatter,
    )
    parser.add_argument("--version", action="version", version=f"tetherctl {tether.__version__}")
    _add_common(parser, top=True)
    sub = parser.add_subparsers(dest="cmd", metavar="COMMAND", required=True)

    def command(name: str, summary: str, description: str, *examples: str, codes: str = EXIT_CODES,
                group: bool = False) -> argparse.ArgumentParser:
        """A command; ``group``: one whose ACTIONs are the commands (its help: examples only)."""
        p = sub.add_parser(name, help=summary, description=textwrap.fill(description, 88),
                           epilog=flags.examples(*examples) if group else _epilog(*examples, codes=codes),
                           formatter_class=formatter)
        if not group:
            _add_common(p, top=False)
        return p

    p = command("agents", "list enrolled agents",
                "List enrolled agents: id, hostname, platform, online, last seen, tags, and a note for a "
                "possible clone (enrolled without proof from another agent's machine UUID: approve, merge or "
                "remove it with `tetherctl agent`). With --json, tags are a list.",
                "tetherctl agents", "tetherctl agents --tag web --online --json")
    p.add_argument("--tag", help="only agents carrying this tag")
    p.add_argument("--online", action="store_true", help="only agents with an open session")
    p.add_argument("--all", action="store_true", help="also agents removed or merged into another")

    p = command("tag", "add a tag to an agent or remove one",
                "Add a tag to an agent or remove it. Tag tasks still within their ttl reach an "
                "agent that is tagged later.",
                "tetherctl tag add AGENT_ID web", "tetherctl tag rm AGENT_ID web")
    p.add_argument("op", choices=("add", "rm"), help="add or rm")
    p.add_argument("agent_id", metavar="AGENT_ID")
    p.add_argument("tag", metavar="TAG", help=RULE)

    p = command("task", "queue a task for an agent, a tag or every agent",
                "Queue a task. Offline agents get it when they connect, until the ttl ends. "
                "COMMAND is a command line such as \"file_get --path /etc/hosts\": "
                "--name value gives {\"name\": \"value\"}, a bare --flag gives true, "
                "positionals go to \"argv\". Prints the task id.",
                "tetherctl task os_version --tag web",
                "tetherctl task \"file_get --path /etc/hosts\" --agent AGENT_ID --ttl 1h --priority high")
    _add_task_spec(p, each="")

    p = command("tasks", "list deliveries (pending ones by default)",
                "List deliveries, one line per agent and task, pending ones unless --state says otherwise.",
                "tetherctl tasks --tag web", "tetherctl tasks --agent AGENT_ID --state all --limit 50")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--agent", metavar="ID", help="only this agent's deliveries")
    target.add_argument("--tag", metavar="T", help="only deliveries of agents that carry this tag")
    target.add_argument("--selector", metavar="EXPR", help="only deliveries of agents a LimaCharlie selector matches")
    p.add_argument("--state", choices=[*(s.value for s in DeliveryState), *FILTERS],
                   help="a delivery state, pending (default: not finished) or all")
    p.add_argument("--limit", type=flags.positive_int, metavar="N", help="at most N rows (default 1000)")

    p = command("show", "show a task and each of its deliveries",
                "Show a task and each delivery: state, run, timestamps (UTC), result or error.",
                "tetherctl show 12", "tetherctl show 12 --history --json")
    p.add_argument("task_id", metavar="TASK_ID", type=flags.positive_int)
    p.add_argument("--history", action="store_true",
                   help="each delivery's history: every run of a polling command, then how it ended")

    p = command("wait", "wait until every delivery of a task has finished",
                "Wait until every delivery of a task has finished, printing progress on stderr. A polling "
                "command has not finished while a next run is scheduled. Exit 0 if all are done, 1 if any "
                "failed (a polling sequence that timed out failed), expired or was cancelled, 124 if --timeout "
                "passed first (and says so on stderr).",
                "tetherctl wait 12", "tetherctl wait 12 --timeout 5m || tetherctl show 12", codes=WAIT_EXIT_CODES)
    p.add_argument("task_id", metavar="TASK_ID", type=flags.positive_int)
    p.add_argument("--timeout", metavar="DURATION", type=flags.duration,
                   help=f"give up after DURATION: {flags.DURATION} (default: wait forever)")

    p = command("untask", "cancel a task, or everything pending for an agent or a tag",
                "Cancel queued deliveries; agents already holding one are told to cancel it. "
                "Prints what it changed: the deliveries cancelled, and the tasks closed (they reach no new agent).",
                "tetherctl untask 12", "tetherctl untask --tag web")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("task_id", metavar="TASK_ID", type=flags.positive_int, nargs="?", help="one task")
    target.add_argument("--agent", metavar="ID", help="everything pending for this agent")
    target.add_argument("--tag", metavar="T",
                        help="everything pending for agents that carry this tag, and tag tasks aimed at it")
    target.add_argument("--selector", metavar="EXPR",
                        help="everything pending for agents a selector matches, and tasks with that selector")

    p = command("action", "send a LimaCharlie-style action object",
                "Send a LimaCharlie reliable-tasking action, e.g. "
                "'{\"action\":\"task\",\"task\":\"os_version\",\"tag\":\"web\"}', "
                "'{\"action\":\"list\"}' or '{\"action\":\"untask\",\"task_id\":12}'. "
                "'-' reads the object from stdin.",
                "tetherctl action '{\"action\": \"list\", \"sid\": \"AGENT_ID\"}'",
                "echo '{\"action\": \"untask\", \"tag\": \"web\"}' | tetherctl action -")
    p.add_argument("object", metavar="JSON", help="the action object, or - for stdin")

    _add_schedule_commands(command)
    _add_credential_commands(command)
    return parser


def _add_credential_commands(command: Callable[..., argparse.ArgumentParser]) -> None:
    """token, key, agent revoke: an admin token's commands (operator and viewer get 1403)."""
    op = _action

    ops = command("token", "admin tokens: create, list, revoke (admin only)",
                  "Admin tokens for tetherctl. A viewer reads; an operator also creates and cancels tasks, tags "
                  "agents and manages schedules; an admin also manages tokens, enrollment keys and agent "
                  "revocation. A token is shown once, when it is made. Revoking one closes the sessions open "
                  "with it at once (4010); the last admin token cannot be revoked.",
                  "tetherctl token create --role viewer --label dashboards", "tetherctl token list", group=True,
                  ).add_subparsers(dest="op", metavar="ACTION", required=True)
    p = op(ops, "create", "make an admin token (printed once; the same flags and default role as `tetherd token "
                          "create`)", "tetherctl token create --role admin --label alice",
           "TETHER_TOKEN=$(tetherctl token create --label ci) ./deploy.sh")
    flags.add_token_flags(p)
    op(ops, "list", "list admin tokens (ids, roles, labels; never the tokens)", "tetherctl token list --json")
    p = op(ops, "revoke", "revoke an admin token; its open sessions are closed at once", "tetherctl token revoke 3")
    p.add_argument("id", metavar="TOKEN_ID", type=flags.positive_int, help="from `tetherctl token list`")

    ops = command("key", "enrollment keys: create, list, revoke (admin only)",
                  "Enrollment keys for `tether-agent enroll`. Agents enrolling with a key get its tags. A key is "
                  "shown once, when it is made; a revoked key enrolls no one (agents already enrolled keep "
                  "their own tokens: revoke those with `tetherctl agent revoke`).",
                  "tetherctl key create --tag web --uses 50 --expires-in 7d", "tetherctl key list", group=True,
                  ).add_subparsers(dest="op", metavar="ACTION", required=True)
    p = op(ops, "create", "make an enrollment key (printed once; the same flags as `tetherd key create`)",
           "tetherctl key create --tag web --uses 50 --expires-in 7d", "tetherctl key create --tag lab --json")
    flags.add_key_flags(p)
    op(ops, "list", "list enrollment keys (ids, tags, expiry, uses left; never the keys)", "tetherctl key list")
    p = op(ops, "revoke", "revoke an enrollment key", "tetherctl key revoke 2")
    p.add_argument("id", metavar="KEY_ID", type=flags.positive_int, help="from `tetherctl key list`")

    ops = command("agent", "revoke, remove, approve or merge an agent (admin only)",
                  "Revoke an agent: its token stops working and its open session is closed at once (4010); the "
                  "agent stops and says it must enroll again (as a new agent: revoke the key it used as well "
                  "to keep it out). Remove an agent: the same, and its unfinished deliveries are cancelled and "
                  "it leaves every target and `agents` (but --all). A possible clone (an agent enrolled without "
                  "proof from another agent's machine UUID, noted in `agents`) is approved as an agent of its "
                  "own, or merged: it takes over the other agent's identity (id, tags, deliveries), whose old "
                  "token stops working.",
                  "tetherctl agent revoke AGENT_ID", "tetherctl agent approve AGENT_ID", group=True,
                  ).add_subparsers(dest="op", metavar="ACTION", required=True)
    for name, summary in (("revoke", "revoke an agent's token and close its session"),
                          ("rm", "remove an agent: token void, unfinished deliveries cancelled, out of listings"),
                          ("approve", "accept a possible clone as an agent of its own"),
                          ("merge", "let a possible clone take over the identity of the agent it is a clone of")):
        op(ops, name, summary, f"tetherctl agent {name} AGENT_ID").add_argument("agent_id", metavar="AGENT_ID")


def _add_task_spec(p: argparse.ArgumentParser, *, each: str) -> None:
    """COMMAND, the target and the task's options: of `task`, and of each task a schedule makes."""
    p.add_argument("command", metavar="COMMAND", help="the command line, quoted as one argument")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--agent", metavar="ID", help="one agent")
    target.add_argument("--tag", metavar="T", help="every agent with this tag, now or until the ttl ends")
    target.add_argument("--all", action="store_true", help="every agent")
    if not each:  # a task, not a schedule's
        target.add_argument("--selector", metavar="EXPR",
                            help="every agent a LimaCharlie selector matches, now or until the ttl ends, "
                                 "e.g. 'plat == linux and \"prod\" in tags'")
        p.add_argument("--context", metavar="ID",
                       help="an investigation id (LimaCharlie's context), shown with the task's results")
    p.add_argument("--args", metavar="JSON", help="a JSON object merged over the command line's args")
    p.add_argument("--ttl", metavar="DURATION", type=flags.whole_seconds,
                   help=f"{each}time to wait for offline agents: {flags.DURATION} (default 7d)")
    p.add_argument("--priority", type=_priority, default=1, metavar="{low,medium,high,urgent}",
                   help=f"{each}priority: agents run higher priorities first (default medium)")
    shown = p.add_mutually_exclusive_group()
    shown.add_argument("--show-polling-output", action="store_true",
                       help="polling commands: show in the history the runs after the first that show nothing "
                            "(by default they are left out, as XSOAR does, and counted)")
    shown.add_argument("--hide-polling-output", action="store_true",
                       help="the default (kept for older scripts): leave those runs out")


def _action(ops: Any, name: str, summary: str, *examples: str) -> argparse.ArgumentParser:
    """An ACTION of a command group (``schedule``, ``token``, ``key``, ``agent``)."""
    p: argparse.ArgumentParser = ops.add_parser(name, help=summary, description=summary,
                                                epilog=_epilog(*examples),
                                                formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_common(p, top=False)
    return p


def _add_schedule_commands(command: Callable[..., argparse.ArgumentParser]) -> None:
    sched = command("schedule", "recurring schedules: add, list, show, pause, resume, rm",
                    "Recurring schedules: each firing creates an ordinary task (push, ttl, untask and history "
                    "apply). Firings missed while tetherd was down run once at its start (--missed once, the "
                    "default) or are skipped (--missed skip).",
                    "tetherctl schedule add probes --every 5m os_version --tag linux", "tetherctl schedule list",
                    group=True)
    ops = sched.add_subparsers(dest="op", metavar="ACTION", required=True)
    p = ops.add_parser("add", help="add a schedule", description=textwrap.fill(
        "Add a schedule: every --every period (30s, 5m, 1h30m, 1d; the first firing one period from now, never "
        "below tetherd's min_interval, 10 s by default) or at the times of a five-field --cron expression "
        "(e.g. '*/5 * * * *', read in --tz). COMMAND is a command line as for `tetherctl task`.", 88),
        epilog=_epilog("tetherctl schedule add probes --every 5m os_version --tag linux",
                       "tetherctl schedule add nightly --cron \"0 3 * * *\" --tz Europe/Paris \"echo --deep\" --all "
                       "--missed skip"),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_common(p, top=False)
    p.add_argument("name", metavar="NAME", help="unique, case-sensitive, no spaces")
    when = p.add_mutually_exclusive_group(required=True)
    when.add_argument("--every", type=flags.duration, metavar="DURATION",
                      help=f"{flags.DURATION}; at least tetherd's min_interval")
    when.add_argument("--cron", metavar="EXPR", help="five fields: minute hour day-of-month month day-of-week")
    _add_task_spec(p, each="each task's ")
    p.add_argument("--missed", choices=("once", "skip"), default="once",
                   help="firings missed while tetherd was down: run once at start (default) or skip them")
    p.add_argument("--tz", default="UTC", metavar="ZONE", help="time zone of --cron (default UTC)")
    for op, summary in (("show", "show a schedule and its newest tasks"), ("pause", "stop firing until resumed"),
                        ("resume", "fire again, from the next firing after now"),
                        ("rm", "remove a schedule (its tasks stay)")):
        _action(ops, op, summary, f"tetherctl schedule {op} nightly").add_argument("name", metavar="NAME")
    _action(ops, "list", "list schedules", "tetherctl schedule list", "tetherctl schedule list --json")


async def run(
    argv: Sequence[str] | None = None,
    *,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    environ: dict[str, str] | None = None,
) -> int:
    """Run one tetherctl command line; return its exit code."""
    stdin = stdin or sys.stdin
    stdout = cast(TextIO, _TerminalSafe(stdout or sys.stdout))
    stderr = cast(TextIO, _TerminalSafe(stderr or sys.stderr))
    env = os.environ if environ is None else environ
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or argparse's own usage error (exit 2)
        return exc.code if isinstance(exc.code, int) else EXIT_INPUT
    args.stdin, args.stdout, args.stderr = stdin, stdout, stderr
    url = args.server or env.get("TETHER_URL") or DEFAULT_URL
    problem = url_problem(url)
    if problem is not None:  # bad input, refused before anything is sent
        print(f"error: {'--server' if args.server else 'TETHER_URL'}: {problem}", file=stderr)
        return EXIT_INPUT
    token = args.token if args.token is not None else env.get("TETHER_TOKEN", "")
    # TETHER_CA is for the wss:// server it was set for; an explicit --ca must fit the URL.
    ca_file = args.ca or (env.get("TETHER_CA") if url.startswith("wss://") else None)
    try:
        method, params = plan(args)
        render = _render_for(method, params)

        def on_event(event: Event) -> None:
            if not args.json:
                print(progress_line(event), file=stderr, flush=True)

        async with ConsoleClient(url, token, ca_file=ca_file) as client:
            result = await client.call(method, params, on_event=on_event)
        if args.json:
            _print_raw(result, stdout)
            return _show_wait(result, args) if method == "task.wait" else EXIT_OK
        return render(result, args)
    except ProtocolError as exc:  # refused locally, before anything was sent
        print(f"error: {exc.code.slug} ({int(exc.code)}): {visible(exc.message)}", file=stderr)
        return EXIT_INPUT
    except ConsoleError as exc:
        hint = ""
        if isinstance(exc, SessionClosed) and exc.code == ErrorCode.UNAUTHORIZED and not token:
            hint = " (no token given: pass --token or set TETHER_TOKEN)"
        print(f"error: {visible(exc)}{hint}", file=stderr)
        return exc.exit_code
    except msgspec.ValidationError as exc:
        print(f"error: the daemon's answer has an unexpected shape ({exc}); try --json", file=stderr)
        return EXIT_INPUT


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return asyncio.run(run(argv))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
