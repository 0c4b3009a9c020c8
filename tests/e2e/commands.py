"""Commands served by the agents of the end-to-end tests (``--commands PATH:agent``).

Every execution is appended to the file named by ``TETHER_TEST_EXEC_LOG``: the agent's own
execution log, which the tests read to prove a command ran once, or never.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from tether.agent import Agent, PollResult, ScheduledCommand, polling_function

agent = Agent()


def _record(ctx: Any, args: dict[str, Any], what: str, *, durable: bool = True) -> None:
    entry = {"delivery_id": ctx.delivery_id, "task_id": ctx.task_id, "run": ctx.run, "at": time.time(),
             "what": what, "args": args}
    with open(os.environ["TETHER_TEST_EXEC_LOG"], "a") as f:
        f.write(json.dumps(entry) + "\n")
        if durable:
            f.flush()
            os.fsync(f.fileno())


@agent.command("note")
def note(args: dict[str, Any], *, ctx: Any) -> None:
    """``record`` without the fsync, for tests that run a thousand commands."""
    _record(ctx, args, "note", durable=False)


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


# -- polling (XSOAR scheduled commands); the e2e tetherd runs with min_interval = 0.5 --------


@agent.command("countdown")
@polling_function(interval=1, timeout=60)
def countdown(args: dict[str, Any], *, ctx: Any) -> PollResult:
    """Polls until ``n`` reaches 1, handing ``n - 1`` to the next run."""
    _record(ctx, args, "countdown")
    n = int(args["n"])
    if n > 1:
        return PollResult(None, continue_to_poll=True, args_for_next_run={**args, "n": n - 1},
                          partial_result={"left": n - 1})
    return PollResult({"done": True, "runs": ctx.run})


@agent.command("slow_countdown")
@polling_function(interval=3, timeout=60)
def slow_countdown(args: dict[str, Any], *, ctx: Any) -> PollResult:
    _record(ctx, args, "slow_countdown")
    n = int(args["n"])
    return PollResult({"done": True}, continue_to_poll=n > 1, args_for_next_run={**args, "n": n - 1})


@agent.command("quiet_countdown")
@polling_function(interval=0.5, timeout=60)
def quiet_countdown(args: dict[str, Any], *, ctx: Any) -> PollResult:
    """Shows nothing until its last run (what ``hide_polling_output`` is for)."""
    n = int(args["n"])
    return PollResult({"done": True}, continue_to_poll=n > 1, args_for_next_run={**args, "n": n - 1})


@agent.command("hasty")
@polling_function(interval=0.1, timeout=60)
def hasty(args: dict[str, Any], *, ctx: Any) -> PollResult:
    """Asks for 0.1 s between runs: below the floor, so the daemon raises it."""
    return PollResult({"run": ctx.run}, continue_to_poll=ctx.run < 2)


@agent.command("never_done")
@polling_function(interval=0.5, timeout=2)
def never_done(args: dict[str, Any], *, ctx: Any) -> PollResult:
    _record(ctx, args, "never_done")
    return PollResult(None, continue_to_poll=lambda response: True)


@agent.command("poll_then_fail")
@polling_function(interval=0.5, timeout=60)
def poll_then_fail(args: dict[str, Any], *, ctx: Any) -> PollResult:
    _record(ctx, args, "poll_then_fail")
    if ctx.run > 1:
        raise RuntimeError("the remote job vanished")
    return PollResult(None, continue_to_poll=True)


@agent.command("submit")
def submit(args: dict[str, Any], *, ctx: Any) -> ScheduledCommand:
    """The lower-level form: schedule a different command, with its own args."""
    _record(ctx, args, "submit")
    return ScheduledCommand("countdown", 0.5, args={"n": 2, "polling": True, "job": "j-1"},
                            partial_result={"submitted": "j-1"}, poll_message="submitted; polling")


@agent.command("park")
async def park(args: dict[str, Any], *, ctx: Any) -> ScheduledCommand:
    """Waits an hour for its next run: the daemon holds the wait, nothing runs meanwhile."""
    return ScheduledCommand("park", 3600, timeout_in_seconds=7200)


@agent.on_config
def configured(config: dict[str, Any]) -> None:
    """Each configuration the agent is given, appended to ``$TETHER_TEST_CONFIG_LOG`` if set;
    ``app.fail`` true refuses it (the agent keeps the one it had)."""
    if config.get("app.fail"):
        raise RuntimeError("app.fail is set: this configuration is refused")
    path = os.environ.get("TETHER_TEST_CONFIG_LOG")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(config) + "\n")
