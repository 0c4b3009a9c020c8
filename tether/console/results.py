"""What tetherctl prints for each method's result (without ``--json``), and its exit code.

Each renderer is bound to the method it shows (``@renders(methods.TASK_CREATE)``, the declarations
of :mod:`tether.protocol.methods`): one per method, none missing (a test checks). Tables
and task views are drawn by :mod:`.render`; a new secret is printed alone on stdout (for
scripts) and what it is on stderr.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import msgspec

from tether.protocol import console as rpc
from tether.protocol import flags, methods
from tether.protocol.alerts import AlertView
from tether.protocol.lifecycle import DeliveryState
from tether.protocol.methods import Bindings

from . import hooks
from .client import EXIT_OK, EXIT_TIMEOUT
from .render import (
    json_text,
    render_agent,
    render_agent_config,
    render_agents,
    render_alert,
    render_alerts,
    render_config_layer,
    render_deliveries,
    render_drift,
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

renders: Bindings[Render] = Bindings("renderer")
"""Each method's renderer: ``renders[methods.TASK_CREATE]``."""


def _print(text: str, args: argparse.Namespace) -> int:
    print(text, file=args.stdout)
    return EXIT_OK


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


# -- agents and tags -------------------------------------------------------------------------


@renders(methods.AGENTS_LIST)
def _agents(result: Any, args: argparse.Namespace) -> int:
    return _print(render_agents(result), args)


@renders(methods.AGENT_GET)
def _agent_show(result: Any, args: argparse.Namespace) -> int:
    return _print(render_agent(result), args)


@renders(methods.CONFIG_SET, methods.CONFIG_UNSET)
def _config_set(result: Any, args: argparse.Namespace) -> int:
    return _print(render_config_layer(result), args)


@renders(methods.CONFIG_GET)
def _config_show(result: Any, args: argparse.Namespace) -> int:
    return _print(render_agent_config(result), args)


@renders(methods.CONFIG_DRIFT)
def _config_drift(result: Any, args: argparse.Namespace) -> int:
    return _print(render_drift(result), args)


@renders(methods.TAG_ADD, methods.TAG_RM)
def _tag(result: Any, args: argparse.Namespace) -> int:
    done = "added to" if args.op == "add" else "removed from"
    line = f"tag {args.tag!r} {done} agent {args.agent_id}"
    if isinstance(result, dict) and isinstance(result.get("new_deliveries"), int):
        line += f" ({_count(result['new_deliveries'], 'delivery', 'deliveries')} of tag tasks queued)"
    return _print(line, args)


# -- tasks -----------------------------------------------------------------------------------


@renders(methods.TASK_CREATE)
def _created(result: Any, args: argparse.Namespace) -> int:
    created = msgspec.convert(result, rpc.TaskCreated)
    print(created.task_id, file=args.stdout)
    line = f"task {created.task_id}: {_count(created.deliveries, 'delivery', 'deliveries')} queued"
    if created.delayed:
        line += f" ({created.delayed} delayed: not pushed before their time, see tetherctl show {created.task_id})"
    print(line, file=args.stderr)
    if created.note:
        print(f"note: {visible(created.note)}", file=args.stderr)
    return EXIT_OK


@renders(methods.TASK_LIST)
def _deliveries(result: Any, args: argparse.Namespace) -> int:
    return _print(render_deliveries(result), args)


@renders(methods.TASK_GET)
def _task(result: Any, args: argparse.Namespace) -> int:
    return _print(render_task(result, history=getattr(args, "history", False)), args)


@renders(methods.TASK_WAIT)
def show_wait(result: Any, args: argparse.Namespace) -> int:
    """The task (not with ``--json``, which printed it raw), and ``wait``'s exit code: on a
    timeout, what has not finished on stderr."""
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


@renders(methods.TASK_WATCH)
def show_watch(result: Any, args: argparse.Namespace) -> int:
    """The last state of every line (the watch display drew the rest), and ``wait``'s exit
    code; with ``--json``, the task as the last line."""
    if args.json:
        print(json_text(result, indent=None), file=args.stdout)
    watch = getattr(args, "watch", None)
    if watch is not None:
        watch.result(result)
    if not args.json and (watch is None or not watch.tty):
        print(render_task(result), file=args.stdout)
    return show_wait(result, argparse.Namespace(**{**vars(args), "json": True}))


@renders(methods.ALERTS_LIST)
def _alerts(result: Any, args: argparse.Namespace) -> int:
    return _print(render_alerts(result), args)


@renders(methods.ALERT_GET)
def _alert(result: Any, args: argparse.Namespace) -> int:
    return _print(render_alert(result), args)


@renders(methods.ALERT_ACK)
def _alert_acked(result: Any, args: argparse.Namespace) -> int:
    view = msgspec.convert(result, AlertView)
    return _print(f"alert {view.alert_id} acknowledged ({_count(view.count, 'copy', 'copies')} so far)", args)


@renders(methods.TASK_CANCEL)
def _cancelled(result: Any, args: argparse.Namespace) -> int:
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
    return _print(visible(line), args)


# -- recurring schedules ---------------------------------------------------------------------


@renders(methods.SCHEDULE_ADD)
def _schedule_added(result: Any, args: argparse.Namespace) -> int:
    print(render_schedule(result), file=args.stdout)
    note = msgspec.convert(result, rpc.ScheduleView).note
    if note:
        print(f"note: {visible(note)}", file=args.stderr)
    return EXIT_OK


@renders(methods.SCHEDULE_LIST)
def _schedules(result: Any, args: argparse.Namespace) -> int:
    return _print(render_schedules(result), args)


@renders(methods.SCHEDULE_GET, methods.SCHEDULE_PAUSE, methods.SCHEDULE_RESUME)
def _schedule(result: Any, args: argparse.Namespace) -> int:
    return _print(render_schedule(result), args)


@renders(methods.SCHEDULE_RM)
def _schedule_removed(result: Any, args: argparse.Namespace) -> int:
    return _print(f"schedule {args.name!r} removed (the tasks it created stay)", args)


# -- credentials -----------------------------------------------------------------------------


@renders(methods.TOKEN_CREATE, methods.KEY_CREATE)
def _secret(result: Any, args: argparse.Namespace) -> int:
    """The new secret alone on stdout (for scripts), what it is on stderr: as ``tetherd
    key|token create`` says it (:data:`tether.protocol.flags.CREDENTIALS`)."""
    credential = flags.CREDENTIALS[args.cmd]
    print(result[credential.secret], file=args.stdout)
    print(credential.created(result[credential.secret + "_id"]), file=args.stderr)
    return EXIT_OK


@renders(methods.TOKEN_LIST)
def _tokens(result: Any, args: argparse.Namespace) -> int:
    return _print(render_tokens(result), args)


@renders(methods.KEY_LIST)
def _keys(result: Any, args: argparse.Namespace) -> int:
    return _print(render_keys(result), args)


def _revoked(result: Any, args: argparse.Namespace, what: str) -> int:
    revoked = msgspec.convert(result, rpc.Revoked)
    line = f"{what} revoked" if revoked.revoked else f"{what} was already revoked"
    if revoked.sessions_closed:
        line += f"; {_count(revoked.sessions_closed, 'open session', 'open sessions')} closed"
    return _print(line, args)


@renders(methods.TOKEN_REVOKE)
def _token_revoked(result: Any, args: argparse.Namespace) -> int:
    return _revoked(result, args, f"admin token {args.id}")


@renders(methods.KEY_REVOKE)
def _key_revoked(result: Any, args: argparse.Namespace) -> int:
    return _revoked(result, args, f"enrollment key {args.id}")


@renders(methods.AGENT_REVOKE)
def _agent_revoked(result: Any, args: argparse.Namespace) -> int:
    return _revoked(result, args, f"agent {args.agent_id}")


@renders(methods.AGENT_APPROVE, methods.AGENT_MERGE, methods.AGENT_RM)
def _resolved(result: Any, args: argparse.Namespace) -> int:
    done = msgspec.convert(result, rpc.AgentResolved)
    line = {"approved": f"agent {done.agent_id} approved: an agent of its own, no longer a possible clone",
            "merged": f"agent {done.agent_id} merged into agent {done.into}: it has that id, tags and deliveries "
                      "from its next session",
            "removed": f"agent {done.agent_id} removed"}[done.outcome]
    if done.cancelled:
        line += f"; {_count(done.cancelled, 'unfinished delivery', 'unfinished deliveries')} of its own cancelled"
    if done.sessions_closed:
        line += f"; {_count(done.sessions_closed, 'open session', 'open sessions')} closed"
    return _print(line, args)


for _methods, _render in hooks.RENDERERS:  # tetherctl hooks: in console/hooks.py
    renders(*_methods)(_render)
