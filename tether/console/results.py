"""What tetherctl prints for each method's result (without ``--json``), and its exit code.

Tables and task views are drawn by :mod:`.render`; a new secret is printed alone on stdout
(for scripts) and what it is on stderr.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import msgspec

from tether.protocol import console as rpc
from tether.protocol.actions import action_to_request
from tether.protocol.lifecycle import DeliveryState

from .client import EXIT_OK, EXIT_TIMEOUT
from .render import (
    render_agents,
    render_deliveries,
    render_keys,
    render_schedule,
    render_schedules,
    render_task,
    render_tokens,
    visible,
    wait_outcome,
)

Render = Callable[[Any, argparse.Namespace], int]
"""Print a result for the parsed command line; return the exit code."""


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


def show_wait(result: Any, args: argparse.Namespace) -> int:
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
    "task.wait": show_wait,
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


def render_for(method: str, params: dict[str, Any]) -> Render:
    if method == "action":
        method, _ = action_to_request(params)
    return RENDER[method]
