"""Polling commands (Cortex XSOAR "Scheduled Commands"): the SDK's PollResult,
ScheduledCommand and polling_function, and the runs of one delivery over a session."""

from __future__ import annotations

import inspect
import math
import re
from typing import TYPE_CHECKING, Any

import pytest

from tether.agent import Agent, Context, PollResult, ScheduledCommand, polling_function
from tether.agent.journal import RESTARTED_WHILE_RUNNING, Journal
from tether.agent.outcome import interpret
from tether.agent.polling import polling_arg_set
from tether.protocol import (
    Ack,
    Cancel,
    Committed,
    Error,
    ErrorCode,
    Progress,
    Result,
    Schedule,
    decode_to_daemon,
    unpack,
)
from tether.protocol.polling import MAX_SECONDS

if TYPE_CHECKING:
    from conftest import FakeDaemon, FakeSession, StartAgent


def ctx(command: str = "sandbox.report", run: int = 1) -> Context:
    return Context(delivery_id=7, task_id=70, command=command, run=run)


# -- polling_function ------------------------------------------------------------------


def test_without_the_polling_arg_the_handler_runs_once() -> None:
    asked: list[Any] = []

    @polling_function()
    def report(args: dict[str, Any]) -> PollResult:
        return PollResult({"state": "running"}, continue_to_poll=lambda r: asked.append(r) or True)

    assert report({"id": 5}, ctx=ctx()) == {"state": "running"}
    assert report({"id": 5, "polling": "false"}, ctx=ctx()) == {"state": "running"}
    assert asked == []  # not polling: continue_to_poll is not even asked


@pytest.mark.parametrize("value", [True, "true", "TRUE", "Yes", "yes"])
def test_polling_arg_values_that_ask_for_polling(value: object) -> None:
    """CommonServerPython ``argToBoolean``: true/yes in any case, and booleans."""
    assert polling_arg_set(value)


@pytest.mark.parametrize("value", [False, None, "false", "No", "FALSE"])
def test_polling_arg_values_that_do_not(value: object) -> None:
    assert not polling_arg_set(value)


@pytest.mark.parametrize("value", [" Yes ", "1", 1, "0", "", "y", 0, 2, 1.0, [True]])
def test_any_other_polling_arg_is_an_error_of_that_run(value: object) -> None:
    """CommonServerPython ``argToBoolean`` raises ``ValueError`` for anything else: XSOAR's
    polling_function fails the run there, it does not quietly not poll."""
    with pytest.raises(ValueError, match="the 'polling' arg must be true, false, yes or no"):
        polling_arg_set(value)

    @polling_function()
    def report(args: dict[str, Any]) -> PollResult:
        raise AssertionError("not reached")

    with pytest.raises(ValueError, match=re.escape(f"got {value!r}")):
        report({"polling": value}, ctx=ctx())


def test_continue_to_poll_schedules_the_next_run_with_xsoar_defaults() -> None:
    @polling_function()
    def report(args: dict[str, Any]) -> PollResult:
        return PollResult({"state": "running"}, continue_to_poll=True, partial_result={"seen": 1})

    scheduled = report({"id": 5, "polling": True}, ctx=ctx("sandbox.report"))
    assert scheduled == ScheduledCommand(
        "sandbox.report", 30, {"id": 5, "polling": True, "hide_polling_output": True}, 600,
        partial_result={"seen": 1}, poll_message="Fetching Results:",
    )


def test_continue_to_poll_false_returns_the_response() -> None:
    @polling_function()
    def report(args: dict[str, Any]) -> PollResult:
        return PollResult({"state": "done"}, continue_to_poll=False, partial_result={"ignored": True})

    assert report({"polling": True}, ctx=ctx()) == {"state": "done"}


@pytest.mark.parametrize(("state", "polls"), [("running", True), ("done", False)])
def test_continue_to_poll_may_be_a_predicate_of_the_response(state: str, polls: bool) -> None:
    @polling_function("sandbox.report", interval=60, timeout=1800, poll_message="waiting")
    def report(args: dict[str, Any]) -> PollResult:
        return PollResult({"state": state}, continue_to_poll=lambda r: r["state"] != "done")

    outcome = report({"id": 5, "polling": "yes"}, ctx=ctx())
    if polls:
        assert outcome == ScheduledCommand(
            "sandbox.report", 60, {"id": 5, "polling": "yes", "hide_polling_output": True}, 1800,
            poll_message="waiting")
    else:
        assert outcome == {"state": "done"}


def test_args_for_next_run_replace_the_input_args_as_xsoars_do() -> None:
    """CommonServerPython ``polling_function``: ``poll_args = poll_result.args_for_next_run or
    args``, then ``poll_args['hide_polling_output'] = True`` -- nothing else is added (the
    next run polls if its args say so: pass the polling arg along, as XSOAR's docs say)."""
    @polling_function(polling_arg_name="poll")
    def report(args: dict[str, Any]) -> PollResult:
        return PollResult(None, continue_to_poll=True, args_for_next_run=args.get("next"))

    reused = report({"id": 5, "poll": "yes"}, ctx=ctx())
    assert isinstance(reused, ScheduledCommand) and reused.args == {"id": 5, "poll": "yes", "hide_polling_output": True}
    replaced = report({"id": 5, "poll": True, "next": {"cookie": "c1"}}, ctx=ctx())
    assert isinstance(replaced, ScheduledCommand) and replaced.args == {"cookie": "c1", "hide_polling_output": True}
    emptied = report({"id": 5, "poll": True, "next": {}}, ctx=ctx())  # {} falls back to the args (XSOAR's `or`)
    assert isinstance(emptied, ScheduledCommand) and emptied.args == {
        "id": 5, "poll": True, "next": {}, "hide_polling_output": True}


def test_the_command_defaults_to_the_one_it_runs_under() -> None:
    @polling_function()
    def report(args: dict[str, Any]) -> PollResult:
        return PollResult(None, continue_to_poll=True)

    for name in ("sandbox.report", "report-v2"):
        outcome = report({"polling": True}, ctx=ctx(name))
        assert isinstance(outcome, ScheduledCommand) and outcome.command == name
    with pytest.raises(TypeError, match="needs ctx"):
        report({"polling": True})

    @polling_function("sandbox.status")
    def named(args: dict[str, Any]) -> PollResult:
        return PollResult(None, continue_to_poll=True)

    outcome = named({"polling": True})  # a named one needs no ctx
    assert isinstance(outcome, ScheduledCommand) and outcome.command == "sandbox.status"


def test_requires_polling_arg_false_polls_without_it() -> None:
    @polling_function(requires_polling_arg=False, interval=15)
    def report(args: dict[str, Any]) -> PollResult:
        return PollResult(None, continue_to_poll=True)

    outcome = report({}, ctx=ctx())
    assert outcome == ScheduledCommand("sandbox.report", 15, {"hide_polling_output": True}, 600,
                                       poll_message="Fetching Results:")
    # a run whose args say hide_polling_output shows no poll message (XSOAR: readable_output None)
    later = report({"hide_polling_output": True}, ctx=ctx())
    assert isinstance(later, ScheduledCommand) and later.poll_message == ""


async def test_async_handlers_stay_async_and_ctx_reaches_only_handlers_that_declare_it() -> None:
    seen: list[Context] = []
    agent = Agent()

    @agent.command("with_ctx")
    @polling_function()
    async def with_ctx(args: dict[str, Any], *, ctx: Context) -> PollResult:
        seen.append(ctx)
        return PollResult("async", continue_to_poll=True)

    @agent.command("plain")
    @polling_function()
    def plain(args: dict[str, Any]) -> PollResult:  # would raise TypeError if given ctx
        return PollResult("sync")

    @agent.command
    @polling_function
    async def bare(args: dict[str, Any]) -> PollResult:
        """Bare decorators, XSOAR's names."""
        return PollResult("bare")

    commands = agent.commands
    assert (commands["with_ctx"].is_async, commands["with_ctx"].takes_ctx) == (True, True)
    assert (commands["plain"].is_async, commands["plain"].takes_ctx) == (False, True)
    assert (commands["bare"].is_async, commands["bare"].takes_ctx) == (True, True)
    assert inspect.iscoroutinefunction(with_ctx) and not inspect.iscoroutinefunction(plain)
    assert (bare.__name__, bare.__doc__) == ("bare", "Bare decorators, XSOAR's names.")

    context = ctx("with_ctx", run=3)
    outcome = await commands["with_ctx"].function({"polling": True}, ctx=context)
    assert seen == [context]
    assert isinstance(outcome, ScheduledCommand) and outcome.command == "with_ctx"
    assert commands["plain"].function({}, ctx=ctx("plain")) == "sync"
    assert await commands["bare"].function({}, ctx=ctx("bare")) == "bare"


def test_a_handler_that_returns_no_poll_result_fails_clearly() -> None:
    @polling_function()
    def report(args: dict[str, Any]) -> Any:
        return {"state": "done"}

    with pytest.raises(TypeError, match="must return a PollResult, not dict"):
        report({}, ctx=ctx())


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"interval": math.nan}, "polling_function: interval must be a finite number of seconds, not nan"),
        ({"interval": math.inf}, "polling_function: interval must be a finite number of seconds, not inf"),
        ({"interval": True}, "polling_function: interval must be a finite number of seconds, not True"),
        ({"interval": "30"}, "polling_function: interval must be a finite number of seconds, not '30'"),
        ({"interval": MAX_SECONDS * 2}, "polling_function: interval of 6.32448e+07 s is more than a year"),
        ({"timeout": -600}, "polling_function: timeout must be more than 0 seconds, not -600"),
        ({"timeout": math.nan}, "polling_function: timeout must be a finite number of seconds, not nan"),
        ({"name": "sandbox report"}, "invalid command name 'sandbox report'"),
        ({"polling_arg_name": ""}, "polling_function: polling_arg_name must be a non-empty str"),
        ({"poll_message": None}, "polling_function: poll_message must be a str"),
    ],
)
def test_bad_polling_function_settings_are_refused_at_decoration(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as refused:
        polling_function(**options)
    assert str(refused.value).startswith(message)


def test_intervals_below_the_daemons_floor_are_the_daemons_to_raise() -> None:
    for interval in (0, 0.5, 3):
        polling_function(interval=interval)
        ScheduledCommand("x", interval)
    polling_function(timeout=None)  # the daemon's default timeout


# -- ScheduledCommand, PollResult --------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "options", "message"),
    [
        (("", 30), {}, "ScheduledCommand: invalid command name ''"),
        (("file get", 30), {}, "ScheduledCommand: invalid command name 'file get'"),
        ((42, 30), {}, "ScheduledCommand: invalid command name 42"),
        (("x", math.nan), {}, "ScheduledCommand: next_run_in_seconds must be a finite number of seconds, not nan"),
        (("x", "30"), {}, "ScheduledCommand: next_run_in_seconds must be a finite number of seconds, not '30'"),
        (("x", 1e12), {}, "ScheduledCommand: next_run_in_seconds of 1e+12 s is more than a year"),
        (("x", 30, None, math.inf), {}, "ScheduledCommand: timeout_in_seconds must be a finite number"),
        (("x", 30, ["id", 5]), {}, "ScheduledCommand: args must be a dict or None, not list"),
        (("x", 30), {"poll_message": 3}, "ScheduledCommand: poll_message must be a str, not int"),
    ],
)
def test_bad_scheduled_commands_are_refused(arguments: tuple[Any, ...], options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as refused:
        ScheduledCommand(*arguments, **options)
    assert str(refused.value).startswith(message)


def test_bad_poll_results_are_refused() -> None:
    with pytest.raises(ValueError, match="continue_to_poll must be a bool or a function"):
        PollResult(None, continue_to_poll="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="args_for_next_run must be a dict or None, not list"):
        PollResult(None, args_for_next_run=[1])  # type: ignore[arg-type]

    async def predicate(response: Any) -> bool:
        return True

    with pytest.raises(TypeError, match="must return a bool, not an awaitable"):
        PollResult(None, continue_to_poll=predicate).should_poll()


def test_a_scheduled_command_becomes_a_schedule_and_its_partial_result_the_output() -> None:
    run_args = {"id": 5, "polling": True}
    outcome = interpret(ScheduledCommand("x", 3, partial_result={"n": 1}), run_args)
    assert outcome.ok and unpack(outcome.output) == {"n": 1}
    assert outcome.schedule == Schedule(command="x", next_run_in_seconds=3.0, args=run_args)
    outcome = interpret(ScheduledCommand("y", 30, {1: "int keys"}, 90, 4, poll_message="m"), run_args)
    assert unpack(outcome.output) is None
    assert outcome.schedule == Schedule(command="y", next_run_in_seconds=30.0, args={"1": "int keys"},
                                        timeout_in_seconds=90.0, poll_message="m", items_remaining=4)
    outcome = interpret(ScheduledCommand("x", 3, partial_result=object()), {})
    assert not outcome.ok and outcome.error == (
        "partial_result is not JSON-serialisable (object): Encoding objects of type object is unsupported")
    problem = interpret(ScheduledCommand("x", 3, {"when": object()}), {})
    assert not problem.ok and problem.error.startswith("ScheduledCommand args are not JSON-serialisable")


# -- runs over a session ---------------------------------------------------------------


def sandbox_agent(states: list[str]) -> tuple[Agent, list[tuple[int, dict[str, Any]]]]:
    """``sandbox.report`` polls until the next of ``states`` is ``done``; ``calls`` records
    ``(ctx.run, args)`` of every run."""
    agent = Agent()
    calls: list[tuple[int, dict[str, Any]]] = []

    @agent.command("sandbox.report")
    @polling_function(interval=20, timeout=300)
    def report(args: dict[str, Any], *, ctx: Context) -> PollResult:
        calls.append((ctx.run, dict(args)))
        ctx.progress_threadsafe(50, f"run {ctx.run}")
        state = states[len(calls) - 1]
        return PollResult({"state": state}, continue_to_poll=lambda r: r["state"] != "done",
                          partial_result={"run": ctx.run, "state": state})

    return agent, calls


def outbox_ids(journal: Journal) -> list[int]:
    return [decode_to_daemon(blob).delivery_id for blob in journal.outbox()]  # type: ignore[union-attr]


async def run_once(session: FakeSession) -> tuple[Ack, list[Progress], Result]:
    """The frames of one run, in order: its ack, its progress reports, its result."""
    ack = await session.expect(Ack, skip=())
    progress = []
    while isinstance(frame := await session.next(), Progress):
        progress.append(frame)
    assert isinstance(frame, Result), frame
    return ack, progress, frame


async def test_a_polling_command_runs_again_as_the_next_run_of_its_delivery(
    daemon: FakeDaemon, start_agent: StartAgent
) -> None:
    agent, calls = sandbox_agent(["running", "done"])
    running = await start_agent(agent)
    session = await daemon.next_session()
    first = daemon.task(7, "sandbox.report", {"id": 5, "polling": True})
    await session.send(first)

    ack, progress, result = await run_once(session)
    assert (ack.delivery_ids, ack.runs) == ([7], [])  # run 1: what a daemon without runs expects
    assert [(p.run, p.percent, p.message) for p in progress] == [(1, None, ""), (1, 50, "run 1")]
    assert (result.delivery_id, result.run, result.ok) == (7, 1, True)
    assert unpack(result.output) == {"run": 1, "state": "running"}
    assert result.schedule == Schedule(
        command="sandbox.report", next_run_in_seconds=20.0, args={"id": 5, "polling": True, "hide_polling_output": True},
        timeout_in_seconds=300.0, poll_message="Fetching Results:")

    second = daemon.next_run(first, result)
    await session.send(Committed(delivery_ids=[7]), second)
    ack, progress, final = await run_once(session)
    assert (ack.delivery_ids, ack.runs) == ([7], [2])
    assert [(p.run, p.percent, p.message) for p in progress] == [(2, None, ""), (2, 50, "run 2")]
    assert (final.delivery_id, final.run, final.ok, final.schedule) == (7, 2, True, None)
    assert unpack(final.output) == {"state": "done"}
    assert calls == [(1, {"id": 5, "polling": True}), (2, {"id": 5, "polling": True, "hide_polling_output": True})]
    assert running.journal.holding() == [(7, 2)]

    # A commit of run 1 (no runs: run 1) is not one of run 2; the agent still holds run 2,
    # says so after a reconnect, and sends its result again.
    await session.send(Committed(delivery_ids=[7]))
    await session.close(1011, "daemon restarting")
    session = await daemon.next_session()
    assert (session.hello.holding, session.hello.holding_runs) == ([7], [2])
    assert await session.expect(Result, skip=()) == final

    await session.send(Committed(delivery_ids=[7], runs=[2]), daemon.task(8))
    await session.expect(Ack)  # frames are handled in order: the commit is done
    assert 7 not in outbox_ids(running.journal)
    assert (7, 2) not in running.journal.holding()
    assert len(calls) == 2


async def test_a_re_pushed_run_is_acked_and_its_result_resent_but_never_run_again(
    daemon: FakeDaemon, start_agent: StartAgent
) -> None:
    agent, calls = sandbox_agent(["running", "running", "done"])
    await start_agent(agent)
    session = await daemon.next_session()
    first = daemon.task(7, "sandbox.report", {"polling": True})
    await session.send(first)
    _, _, result = await run_once(session)
    second = daemon.next_run(first, result)
    await session.send(Committed(delivery_ids=[7]), second)
    _, _, result2 = await run_once(session)
    assert result2.run == 2 and result2.schedule is not None

    await session.send(second)  # pushed again: acked, the same result, no run
    assert (await session.expect(Ack, skip=())).runs == [2]
    assert await session.expect(Result, skip=()) == result2
    await session.send(first)  # a stale run 1: the daemon committed it long ago
    third = daemon.next_run(second, result2)
    await session.send(Committed(delivery_ids=[7], runs=[2]), third)
    ack, _, result3 = await run_once(session)
    assert (ack.delivery_ids, ack.runs, result3.run, result3.schedule) == ([7], [3], 3, None)
    assert [run for run, _ in calls] == [1, 2, 3]


async def test_a_cancel_between_runs_ends_the_sequence(daemon: FakeDaemon, start_agent: StartAgent) -> None:
    agent, calls = sandbox_agent(["running", "done"])
    running = await start_agent(agent)
    session = await daemon.next_session()
    first = daemon.task(7, "sandbox.report", {"polling": True})
    await session.send(first)
    _, _, result = await run_once(session)
    await session.send(Committed(delivery_ids=[7]), Cancel(delivery_id=7, reason="expired"))
    await session.send(daemon.next_run(first, result), daemon.task(8))
    assert (await session.expect(Ack, skip=())).delivery_ids == [8]  # run 2 of 7 not even acked
    assert (await session.expect(Result)).delivery_id == 8
    assert len(calls) == 1
    assert running.journal.state(7) == "cancelled"


async def test_a_refused_result_of_a_later_run_leaves_the_outbox(daemon: FakeDaemon, start_agent: StartAgent) -> None:
    agent, _ = sandbox_agent(["running", "done"])
    running = await start_agent(agent)
    session = await daemon.next_session()
    first = daemon.task(7, "sandbox.report", {"polling": True})
    await session.send(first)
    _, _, result = await run_once(session)
    await session.send(Committed(delivery_ids=[7]), daemon.next_run(first, result))
    await run_once(session)
    code = ErrorCode.ILLEGAL_TRANSITION
    await session.send(Error(code=code, name=code.slug, message="no", ref=7), daemon.task(8))
    await session.expect(Ack)
    assert 7 not in outbox_ids(running.journal)
    assert (7, 2) not in running.journal.holding()


async def test_a_plain_handler_may_return_a_scheduled_command(daemon: FakeDaemon, start_agent: StartAgent) -> None:
    agent = Agent()

    @agent.command("submit")
    async def submit(args: dict[str, Any]) -> ScheduledCommand:
        args["mutated"] = True  # the next run gets the args as delivered
        return ScheduledCommand("sandbox.report", 3, partial_result="submitted")

    await start_agent(agent)
    session = await daemon.next_session()
    await session.send(daemon.task(1, "submit", {"url": "http://x"}))
    result = await session.expect(Result, skip=(Ack, Progress))
    assert (result.ok, result.run, unpack(result.output)) == (True, 1, "submitted")
    assert result.schedule == Schedule(command="sandbox.report", next_run_in_seconds=3.0, args={"url": "http://x"})


@pytest.mark.parametrize(
    ("command", "error"),
    [
        ("unserialisable", "partial_result is not JSON-serialisable (object)"),
        ("not_a_poll_result", "TypeError: a polling_function handler must return a PollResult, not str"),
        ("raises", "RuntimeError: sandbox gone"),
    ],
)
async def test_a_failing_run_gives_a_failed_result_of_that_run(
    daemon: FakeDaemon, start_agent: StartAgent, command: str, error: str
) -> None:
    agent = Agent()

    @agent.command("unserialisable")
    def unserialisable(args: dict[str, Any]) -> ScheduledCommand:
        return ScheduledCommand("unserialisable", 30, partial_result=object())

    @agent.command("not_a_poll_result")
    @polling_function()
    def not_a_poll_result(args: dict[str, Any]) -> Any:
        return "done"

    @agent.command("raises")
    @polling_function()
    async def raises(args: dict[str, Any]) -> PollResult:
        raise RuntimeError("sandbox gone")

    await start_agent(agent)
    session = await daemon.next_session()
    await session.send(daemon.task(7, command, {"polling": True}, run=4))
    ack, _, result = await run_once(session)
    assert (ack.delivery_ids, ack.runs) == ([7], [4])
    assert (result.delivery_id, result.run, result.ok, result.schedule) == (7, 4, False, None)
    assert result.error.startswith(error)


async def test_a_run_interrupted_by_a_restart_fails_as_that_run(
    daemon: FakeDaemon, start_agent: StartAgent, tmp_path: Any
) -> None:
    with Journal(tmp_path / "agent-1.sqlite") as journal:
        journal.accept([daemon.task(7, "sandbox.report", {"polling": True}, run=3), daemon.task(8, run=2)])
        assert journal.claim(7, 3) is not None  # run 3 was running when the agent died

    agent, calls = sandbox_agent(["done"])
    await start_agent(agent)
    session = await daemon.next_session()
    assert (session.hello.holding, session.hello.holding_runs) == ([7, 8], [3, 2])
    results = {}
    for _ in range(2):
        result = await session.expect(Result)
        results[result.delivery_id] = result
    assert (results[7].run, results[7].ok, results[7].error) == (3, False, RESTARTED_WHILE_RUNNING)
    assert (results[8].run, results[8].ok, unpack(results[8].output)) == (2, True, {"n": 8})
    assert calls == []
