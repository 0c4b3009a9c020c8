"""Commands served by the agents of the end-to-end tests (``--commands PATH:agent``).

Every execution is appended to the file named by ``TETHER_TEST_EXEC_LOG``: the agent's own
execution log, which the tests read to prove a command ran once, or never.
"""

from __future__ import annotations

import json
import os
from typing import Any

from tether.agent import Agent

agent = Agent()


def _record(ctx: Any, args: dict[str, Any], what: str) -> None:
    entry = {"delivery_id": ctx.delivery_id, "task_id": ctx.task_id, "what": what, "args": args}
    with open(os.environ["TETHER_TEST_EXEC_LOG"], "a") as f:
        f.write(json.dumps(entry) + "\n")
        f.flush()
        os.fsync(f.fileno())


@agent.command("record")
def record(args: dict[str, Any], *, ctx: Any) -> dict[str, Any]:
    _record(ctx, args, "record")
    return {"recorded": args}


@agent.command("gate")
def gate(args: dict[str, Any], *, ctx: Any) -> dict[str, Any]:
    """Block until the test writes to the FIFO ``args["fifo"]``; opening it for writing
    is how the test knows the command is running."""
    with open(args["fifo"]) as f:
        word = f.read().strip()
    _record(ctx, args, "gate")
    return {"gate": word}


@agent.command("fail")
def fail(args: dict[str, Any]) -> None:
    raise RuntimeError(args.get("message", "boom"))
