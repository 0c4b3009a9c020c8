"""What every store backend applies the same way, beside the lifecycle's decisions.

Kept apart so that a backend need not import another (the in-memory one takes these, not
the SQLite modules).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from ...protocol.cmdline import parse_command_line
from ...protocol.selectors import Facts, compile_selector
from . import NewTask

MAX_ID = 2**63 - 1
"""The largest id a store holds (SQLite's largest integer): a larger id from a peer names nothing."""


@functools.lru_cache(maxsize=1024)
def selector(text: str) -> Callable[[Facts], bool]:
    """A selector compiled once per text: an agent connecting evaluates every active one."""
    return compile_selector(text)


def split_command_line(task: NewTask) -> NewTask:
    """A schedule keeps the command line as given; its tasks get it split, as task.create does."""
    command, args = parse_command_line(task.command)
    args.update(task.args)
    return NewTask(command=command, args=args, target_kind=task.target_kind, target=task.target,
                   priority=task.priority, ttl=task.ttl, hide_polling_output=task.hide_polling_output,
                   schedule_id=task.schedule_id)
