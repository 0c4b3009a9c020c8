"""The agent's session against a fake daemon: tasks, dedup, outbox, cancel, order, errors."""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import TYPE_CHECKING, Any

import pytest
from websockets.asyncio.server import serve

import tether
from tether.agent import Agent, Context, Identity, Journal, SessionClosed, enroll
from tether.agent.journal import RESTARTED_WHILE_RUNNING
from tether.agent.runner import STOPPED_WHILE_RUNNING
from tether.protocol import (
    MSGPACK,
    PROTOCOL_VERSION,
    Ack,
    Cancel,
    Committed,
    Error,
    ErrorCode,
    Progress,
    Result,
    Welcome,
    decode_to_daemon,
    unpack,
)

if TYPE_CHECKING:
    from conftest import FakeDaemon, FakeSession, StartAgent

TIMEOUT = 5.0


def decode_from_daemon_result(blob: bytes) -> Result:
    frame = decode_to_daemon(blob)
    assert isinstance(frame, Result)
    return frame


def blocking_agent() -> tuple[Agent, asyncio.Event, list[int]]:
    """An agent whose ``block`` command waits for ``release``; ``record`` notes the order."""
    agent = Agent("test")
    release = asyncio.Event()
    order: list[int] = []

    @agent.command("block")
    async def block(args: dict[str, Any]) -> str:
        order.append(args["n"])
        await release.wait()
        return "released"

    @agent.command("record")
    async def record(args: dict[str, Any]) -> int:
        order.append(args["n"])
        return int(args["n"])

    return agent, release, order


async def acks_until(session: FakeSession, ids: set[int]) -> None:
    """Read ``ack`` frames (skipping progress) until they covered ``ids``."""
    seen: set[int] = set()
    while not ids <= seen:
        seen.update((await session.expect(Ack)).delivery_ids)


async def test_hello_carries_identity_facts_and_served_commands(daemon: FakeDaemon, start_agent: StartAgent) -> None:
    agent = Agent()
    agent.command("mine")(lambda args: None)
    await start_agent(agent, hostname="sim-1", platform="linux-x86_64")
    session = await daemon.next_session()
    hello = session.hello
    assert (hello.role, hello.version, hello.token, hello.agent_id) == ("agent", PROTOCOL_VERSION, daemon.token, "agent-1")
    assert (hello.hostname, hello.platform, hello.machine_uuid) == ("sim-1", "linux-x86_64", "machine-agent-1")
    assert hello.agent_version == tether.__version__
    assert hello.commands == ["echo", "mine", "os_version", "scan"]
    assert hello.holding == []


async def test_task_is_journaled_acked_run_once_and_result_sent(daemon: FakeDaemon, start_agent: StartAgent) -> None:
    running = await start_agent()
    session = await daemon.next_session()
    await session.send(daemon.task(7, "echo", {"hello": "world"}))

    assert (await session.expect(Ack, skip=())).delivery_ids == [7]
    # echo returns without waiting: no start report, the result says when it started
    result = await session.expect(Result, skip=())
    assert (result.delivery_id, result.ok, result.error) == (7, True, "")
    assert unpack(result.output) == {"hello": "world"}
    assert 0 < result.started_at <= result.finished_at
    assert running.journal.state(7) == "finished"
    assert running.journal.holding() == [(7, 1)]  # result not yet committed

    await session.send(Committed(delivery_ids=[7]), daemon.task(8))
    await session.expect(Ack)  # frames are handled in order: the commit is done
    assert (7, 1) not in running.journal.holding()
    assert running.journal.state(7) == "finished"


async def test_a_handler_that_waits_is_reported_running_before_it_ends(
    daemon: FakeDaemon, start_agent: StartAgent
) -> None:
    agent = Agent()
    release = asyncio.Event()

    @agent.command("slow")
    async def slow(args: dict[str, Any]) -> str:
        await release.wait()
        return "late"

    await start_agent(agent)
    session = await daemon.next_session()
    await session.send(daemon.task(9, "slow"))
    await session.expect(Ack, skip=())
    progress = await session.expect(Progress, skip=())
    assert (progress.delivery_id, progress.run, progress.percent, progress.message) == (9, 1, None, "")
    release.set()
    result = await session.expect(Result, skip=())
    assert (result.delivery_id, result.ok, unpack(result.output)) == (9, True, "late")


async def test_burst_of_tasks_is_acked_in_one_frame(daemon: FakeDaemon, start_agent: StartAgent) -> None:
    await start_agent()
    session = await daemon.next_session()
    await session.send(*(daemon.task(i) for i in range(1, 6)))
    assert (await session.expect(Ack, skip=())).delivery_ids == [1, 2, 3, 4, 5]
    results = {(await session.expect(Result)).delivery_id for _ in range(5)}
    assert results == {1, 2, 3, 4, 5}


async def test_redelivered_task_never_runs_twice(daemon: FakeDaemon, start_agent: StartAgent) -> None:
    calls: list[int] = []
    agent = Agent()

    @agent.command("count")
    async def count(args: dict[str, Any]) -> int:
        calls.append(args["n"])
        return len(calls)

    await start_agent(agent)
    first = await daemon.next_session()
    await first.send(daemon.task(1, "count"))
    await first.expect(Ack)
    result = await first.expect(Result)

    # Pushed again while the result waits in the outbox: acked, the same result re-sent.
    await first.send(daemon.task(1, "count"))
    assert (await first.expect(Ack, skip=())).delivery_ids == [1]
    assert await first.expect(Result, skip=()) == result

    # After a reconnect: the agent says it holds 1, re-sends the result, still no re-run.
    await first.close(1011, "daemon restarting")
    second = await daemon.next_session()
    assert (second.hello.holding, second.hello.holding_runs) == ([1], [])  # run 1: no runs list
    assert await second.expect(Result, skip=()) == result
    await second.send(daemon.task(1, "count"))
    assert (await second.expect(Ack, skip=())).delivery_ids == [1]
    assert await second.expect(Result, skip=()) == result

    # Once committed, a re-push is not even acknowledged.
    await second.send(Committed(delivery_ids=[1]), daemon.task(1, "count"), daemon.task(2, "count"))
    assert (await second.expect(Ack, skip=())).delivery_ids == [2]
    assert unpack((await second.expect(Result)).output) == 2
    assert calls == [1, 2]


async def test_outbox_is_resent_after_every_reconnect_until_committed(
    daemon: FakeDaemon, start_agent: StartAgent
) -> None:
    await start_agent()
    session = await daemon.next_session()
    await session.send(daemon.task(1))
    await session.expect(Ack)
    result = await session.expect(Result)
    for _ in range(2):
        await session.close(1001, "going away")
        session = await daemon.next_session()
        assert await session.expect(Result, skip=()) == result  # first thing after welcome
    await session.send(Committed(delivery_ids=[1]))
    await session.close(1001, "going away")
    session = await daemon.next_session()
    assert session.hello.holding == []
    await session.send(daemon.task(2))
    assert (await session.expect(Ack, skip=())).delivery_ids == [2]  # no result of 1 first


async def test_cancel_before_start_prevents_running(daemon: FakeDaemon, start_agent: StartAgent) -> None:
    agent, release, order = blocking_agent()
    running = await start_agent(agent, concurrency=1)
    session = await daemon.next_session()
    await session.send(daemon.task(1, "block"))
    assert (await session.expect(Progress, skip=(Ack,))).delivery_id == 1
    await session.send(daemon.task(2, "record"))
    await acks_until(session, {2})
    await session.send(Cancel(delivery_id=2), Cancel(delivery_id=9, reason="expired"))
    await session.send(daemon.task(3, "record"))
    await acks_until(session, {3})
    assert running.journal.state(2) == "cancelled"

    # A task frame for a delivery cancelled before it arrived is ignored, not even acked.
    await session.send(daemon.task(9, "record"), daemon.task(4, "record"))
    assert (await session.expect(Ack)).delivery_ids == [4]
    release.set()
    assert [(await session.expect(Result)).delivery_id for _ in range(3)] == [1, 3, 4]
    assert order == [1, 3, 4]
    assert (2, 1) not in running.journal.holding()


async def test_cancel_interrupts_a_running_async_handler(daemon: FakeDaemon, start_agent: StartAgent) -> None:
    agent = Agent()
    interrupted = asyncio.Event()

    @agent.command("forever")
    async def forever(args: dict[str, Any]) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            interrupted.set()
            raise

    running = await start_agent(agent)
    session = await daemon.next_session()
    await session.send(daemon.task(1, "forever"))
    await session.expect(Progress, skip=(Ack,))
    await session.send(Cancel(delivery_id=1))
    async with asyncio.timeout(TIMEOUT):
        await interrupted.wait()
    await session.send(daemon.task(2))
    assert (await session.expect(Result, skip=(Ack, Progress))).delivery_id == 2  # none for 1
    assert running.journal.state(1) == "cancelled"


async def test_cancel_of_a_sync_handler_sets_the_flag_and_drops_its_result(
    daemon: FakeDaemon, start_agent: StartAgent
) -> None:
    agent = Agent()
    saw_cancel = threading.Event()

    @agent.command("poll")
    def poll(args: dict[str, Any], *, ctx: Context) -> str:
        if ctx.cancelled.wait(TIMEOUT):
            saw_cancel.set()
        return "finished anyway"

    running = await start_agent(agent)
    session = await daemon.next_session()
    await session.send(daemon.task(1, "poll"))
    await session.expect(Progress, skip=(Ack,))
    await session.send(Cancel(delivery_id=1))
    await session.send(daemon.task(2))
    assert (await session.expect(Result, skip=(Ack, Progress))).delivery_id == 2
    await asyncio.to_thread(saw_cancel.wait, TIMEOUT)
    assert saw_cancel.is_set()
    await session.send(daemon.task(3))
    assert (await session.expect(Result, skip=(Ack, Progress))).delivery_id == 3  # still none for 1
    assert running.journal.state(1) == "cancelled"


async def test_highest_priority_then_oldest_runs_first(daemon: FakeDaemon, start_agent: StartAgent) -> None:
    agent, release, order = blocking_agent()
    await start_agent(agent, concurrency=1)
    session = await daemon.next_session()
    await session.send(daemon.task(1, "block"))
    await session.expect(Progress, skip=(Ack,))
    priorities = {2: 0, 3: 3, 4: 1, 5: 3, 6: 2}
    await session.send(*(daemon.task(i, "record", priority=p) for i, p in priorities.items()))
    await acks_until(session, set(priorities))
    release.set()
    results = [(await session.expect(Result)).delivery_id for _ in range(6)]
    assert results == order == [1, 3, 5, 6, 4, 2]


async def test_sync_handler_runs_in_a_thread_and_reports_progress(daemon: FakeDaemon, start_agent: StartAgent) -> None:
    agent = Agent()

    @agent.command("blocking")
    def blocking(args: dict[str, Any], *, ctx: Context) -> dict[str, Any]:
        ctx.progress_threadsafe(50, "half way")
        return {"thread": threading.get_ident(), "task_id": ctx.task_id}

    @agent.command("async_progress")
    async def async_progress(args: dict[str, Any], *, ctx: Context) -> None:
        await ctx.progress(percent=10)

    await start_agent(agent)
    session = await daemon.next_session()
    await session.send(daemon.task(1, "blocking"))
    await session.expect(Ack)
    assert (await session.expect(Progress, skip=())).percent is None  # started
    step = await session.expect(Progress, skip=())
    assert (step.delivery_id, step.percent, step.message) == (1, 50, "half way")
    result = await session.expect(Result, skip=())
    assert result.ok, result.error
    assert unpack(result.output) == {"thread": unpack(result.output)["thread"], "task_id": 1001}
    assert unpack(result.output)["thread"] != threading.get_ident()

    await session.send(daemon.task(2, "async_progress"))
    await session.expect(Progress, skip=(Ack,))
    assert (await session.expect(Progress, skip=())).percent == 10


@pytest.mark.parametrize(
    ("command", "error"),
    [
        ("raises", "ValueError: disk on fire"),
        ("raises_sync", "KeyError: 'missing'"),
        ("unserialisable", "return value is not JSON-serialisable (object)"),
        ("nope", "unknown command 'nope' (this agent serves: echo, os_version, raises, raises_sync, scan, unserialisable)"),
    ],
)
async def test_failures_become_failed_results(
    daemon: FakeDaemon, start_agent: StartAgent, command: str, error: str
) -> None:
    agent = Agent()

    @agent.command("raises")
    async def raises(args: dict[str, Any]) -> None:
        raise ValueError("disk on fire")

    @agent.command("raises_sync")
    def raises_sync(args: dict[str, Any]) -> None:
        raise KeyError("missing")

    @agent.command("unserialisable")
    async def unserialisable(args: dict[str, Any]) -> object:
        return object()

    await start_agent(agent)
    session = await daemon.next_session()
    await session.send(daemon.task(1, command))
    result = await session.expect(Result, skip=(Ack, Progress))
    assert not result.ok
    assert result.error.startswith(error)
    assert unpack(result.output) is None


async def test_args_that_are_not_an_object_fail_cleanly(daemon: FakeDaemon, start_agent: StartAgent) -> None:
    await start_agent()
    session = await daemon.next_session()
    await session.send(daemon.task(1, "echo", [1, 2]))
    result = await session.expect(Result, skip=(Ack, Progress))
    assert (result.ok, result.error) == (False, "args must be a JSON object, got list")


async def test_os_version_reports_real_platform_facts(daemon: FakeDaemon, start_agent: StartAgent) -> None:
    await start_agent()
    session = await daemon.next_session()
    await session.send(daemon.task(1, "os_version", {}))
    result = await session.expect(Result, skip=(Ack, Progress))
    facts = unpack(result.output)
    assert result.ok
    assert facts["hostname"] == socket.gethostname()
    assert {"system", "release", "version", "machine", "python"} <= facts.keys()


async def test_fatal_refusal_at_hello_stops_the_client(daemon: FakeDaemon, start_agent: StartAgent) -> None:
    """Which codes are fatal, and what the error then says: tests/protocol/test_session.py."""
    running = await start_agent(token="stale")
    with pytest.raises(SessionClosed) as failure:
        async with asyncio.timeout(TIMEOUT):
            await running.task
    assert failure.value.code == ErrorCode.UNAUTHORIZED
    assert str(failure.value).startswith("unauthorized (4010): bad token; the daemon does not accept")
    assert len(daemon.hellos) == 1  # never retried


async def test_replaced_in_session_stops_the_client(daemon: FakeDaemon, start_agent: StartAgent) -> None:
    running = await start_agent()
    session = await daemon.next_session()
    await session.send(Error(code=ErrorCode.REPLACED, name="replaced", message="newer session"))
    await session.close(ErrorCode.REPLACED, "replaced")
    with pytest.raises(SessionClosed) as failure:
        async with asyncio.timeout(TIMEOUT):
            await running.task
    assert failure.value.code == ErrorCode.REPLACED
    assert len(daemon.hellos) == 1


async def test_shed_load_is_retried_no_sooner_than_retry_after(daemon: FakeDaemon, start_agent: StartAgent) -> None:
    daemon.refuse_next(ErrorCode.TOO_MANY_SESSIONS, "busy", retry_after=0.2)
    daemon.refuse_next(ErrorCode.SERVER_ERROR, "oops")
    daemon.http_refusals = 2
    await start_agent(rand=lambda: 0.0)
    await daemon.next_session()
    assert len(daemon.hellos) == 3
    assert daemon.hello_times[1] - daemon.hello_times[0] >= 0.2


async def test_connection_refused_is_retried_until_the_daemon_listens(daemon: FakeDaemon, start_agent: StartAgent) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    daemon.url = f"ws://127.0.0.1:{port}"
    running = await start_agent()
    assert running.client.sessions == 0
    async with serve(daemon.handler, "127.0.0.1", port, compression=None):
        await daemon.next_session()
    assert not running.task.done()


async def test_stop_finishes_running_commands_then_closes_with_1000(
    daemon: FakeDaemon, start_agent: StartAgent
) -> None:
    agent, release, _ = blocking_agent()
    running = await start_agent(agent)
    session = await daemon.next_session()
    await session.send(daemon.task(1, "block"))
    await session.expect(Progress, skip=(Ack,))
    running.client.stop()
    await session.send(daemon.task(2, "record"))
    assert (await session.expect(Ack)).delivery_ids == [2]  # journaled, but not started
    release.set()
    result = await session.expect(Result)
    assert (result.delivery_id, result.ok) == (1, True)
    assert await session.wait_closed() == 1000
    await running.stopped()
    assert running.journal.state(2) == "pending"


async def test_stop_grace_expiry_fails_the_running_command(daemon: FakeDaemon, start_agent: StartAgent) -> None:
    agent, _, _ = blocking_agent()
    running = await start_agent(agent, shutdown_grace=0.05)
    session = await daemon.next_session()
    await session.send(daemon.task(1, "block"))
    await session.expect(Progress, skip=(Ack,))
    running.client.stop()
    result = await session.expect(Result)
    assert (result.ok, result.error) == (False, STOPPED_WHILE_RUNNING)
    assert await session.wait_closed() == 1000
    await running.stopped()


@pytest.mark.parametrize(
    ("code", "dropped"),
    [(ErrorCode.ILLEGAL_TRANSITION, True), (ErrorCode.UNKNOWN_DELIVERY, True), (ErrorCode.FORBIDDEN, True),
     (ErrorCode.STORAGE_UNAVAILABLE, False)],
)
async def test_refused_results_leave_the_outbox(
    daemon: FakeDaemon, start_agent: StartAgent, code: ErrorCode, dropped: bool
) -> None:
    running = await start_agent()
    session = await daemon.next_session()
    await session.send(daemon.task(1))
    await session.expect(Result, skip=(Ack, Progress))
    await session.send(Error(code=code, name=code.slug, message="no", ref=1), daemon.task(2))
    await session.expect(Ack)  # handled in order: the error was handled
    in_outbox = [decode_from_daemon_result(blob).delivery_id for blob in running.journal.outbox()]
    assert (1 in in_outbox) is not dropped
    assert ((1, 1) in running.journal.holding()) is not dropped


async def test_restart_fails_interrupted_deliveries_and_runs_pending_ones(
    daemon: FakeDaemon, start_agent: StartAgent, tmp_path: Any
) -> None:
    with Journal(tmp_path / "agent-1.sqlite") as journal:
        journal.accept([daemon.task(1, "echo"), daemon.task(2, "echo", {"after": "restart"})])
        assert journal.claim(1, 1) is not None  # was running when the agent died

    await start_agent()
    session = await daemon.next_session()
    results = {}
    for _ in range(2):
        result = await session.expect(Result)
        results[result.delivery_id] = result
    assert (results[1].ok, results[1].error) == (False, RESTARTED_WHILE_RUNNING)
    assert (results[2].ok, unpack(results[2].output)) == (True, {"after": "restart"})


async def test_a_bad_welcome_is_retried(daemon: FakeDaemon, start_agent: StartAgent) -> None:
    daemon.bad_welcomes = [b"\xc1", MSGPACK.encode(Committed(delivery_ids=[]))]
    await start_agent()
    await daemon.next_session()
    assert len(daemon.hellos) == 3


async def test_a_bad_frame_in_session_is_logged_and_skipped(
    daemon: FakeDaemon, start_agent: StartAgent, caplog: pytest.LogCaptureFixture
) -> None:
    await start_agent()
    session = await daemon.next_session()
    await session.ws.send(b"\xc1")
    await session.ws.send(MSGPACK.encode(Welcome(version=1, role="agent", session_id="x", server_time=0)))
    await session.send(daemon.task(1))
    assert (await session.expect(Result, skip=(Ack, Progress))).ok
    assert "event=bad_frame" in caplog.text and "malformed" in caplog.text
    assert "event=unexpected_frame" in caplog.text and "frame=Welcome" in caplog.text


async def test_retry_after_sent_in_session_is_honoured(daemon: FakeDaemon, start_agent: StartAgent) -> None:
    await start_agent(rand=lambda: 0.0)
    session = await daemon.next_session()
    await session.send(Error(code=ErrorCode.TOO_MANY_SESSIONS, name="too_many_sessions", message="shed",
                             retry_after=0.2))
    await session.close(ErrorCode.TOO_MANY_SESSIONS, "shed")
    await daemon.next_session()
    assert daemon.hello_times[1] - daemon.hello_times[0] >= 0.2


async def test_cancelling_run_fails_the_running_command(daemon: FakeDaemon, start_agent: StartAgent) -> None:
    agent, _, _ = blocking_agent()
    running = await start_agent(agent)
    session = await daemon.next_session()
    await session.send(daemon.task(1, "block"))
    await session.expect(Progress, skip=(Ack,))
    running.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(TIMEOUT):
            await running.task
    [failed] = [decode_from_daemon_result(blob) for blob in running.journal.outbox()]
    assert (failed.delivery_id, failed.ok, failed.error) == (1, False, STOPPED_WHILE_RUNNING)


async def test_many_clients_share_one_loop(daemon: FakeDaemon, start_agent: StartAgent) -> None:
    """What the benchmark does: many simulated agents on one event loop, one journal each."""
    clients = [await start_agent(name=f"sim-{i}", concurrency=1) for i in range(10)]
    sessions: dict[str, FakeSession] = {}
    for _ in clients:
        session = await daemon.next_session()
        sessions[str(session.hello.agent_id)] = session
    for i, session in enumerate(sessions.values()):
        await session.send(daemon.task(i + 1))
    for session in sessions.values():
        assert (await session.expect(Result, skip=(Ack, Progress))).ok
    assert sorted(sessions) == sorted(f"sim-{i}" for i in range(10))


async def test_an_agent_merged_into_another_is_that_agent_from_then_on(
    daemon: FakeDaemon, start_agent: StartAgent
) -> None:
    """15.1: after ``tetherctl agent merge``, the welcome names the agent this one took over."""
    daemon.welcome_agent_id = "agent-0"
    running = await start_agent()
    session = await daemon.next_session()
    assert session.hello.agent_id == "agent-1"
    await session.send(daemon.task(1))
    await session.expect(Ack)  # the agent read the welcome before this
    identity = running.journal.identity()
    assert identity is not None and identity.agent_id == "agent-0" and identity.token == daemon.token
    await session.ws.close(1012)  # tetherd closes a merged agent's session: it logs in again
    again = await daemon.next_session()
    assert again.hello.agent_id == "agent-0"
    await running.stopped()


async def test_enroll_returns_an_identity_or_raises(daemon: FakeDaemon) -> None:
    identity = await enroll(daemon.url, "KEY", machine_uuid="m-1", tags=["lab"], hostname="h", platform="p")
    assert identity == Identity(daemon.url, "agent-1", daemon.token, "m-1", ("lab",))
    assert (daemon.enrolls[0].hostname, daemon.enrolls[0].platform) == ("h", "p")
    daemon.enroll_answer = Error(code=ErrorCode.ENROLL_KEY_EXPIRED, name="enroll_key_expired", message="expired")
    with pytest.raises(SessionClosed) as refused:
        await enroll(daemon.url, "KEY", machine_uuid="m-1")
    assert (refused.value.code, refused.value.name) == (4012, "enroll_key_expired")
