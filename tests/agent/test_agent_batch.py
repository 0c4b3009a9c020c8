"""Batch frames between the agent and a daemon that speaks them, and not with one that does not."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import pytest

from tether.agent import Agent
from tether.agent import outflow as outflow_module
from tether.agent.outflow import BATCH_MAX_BYTES, HOLD_FRAMES
from tether.protocol import MSGPACK, Ack, Cancel, Committed, Frame, Progress, Result
from tether.protocol.frames import Batch

if TYPE_CHECKING:
    from conftest import FakeDaemon, FakeSession, StartAgent


async def frames_until_results(session: FakeSession, ids: set[int]) -> list[Frame]:
    """Every frame the agent sent until results of all ``ids`` arrived."""
    frames: list[Frame] = []
    seen: set[int] = set()
    while not ids <= seen:
        frame = await session.next()
        frames.append(frame)
        if isinstance(frame, Result):
            seen.add(frame.delivery_id)
    return frames


def check_order(frames: list[Frame]) -> None:
    """Per delivery: ack, then progress if any, then result, as when every frame went alone.
    (A handler that returns without waiting sends no start report: its result says when
    it started.)"""
    acked: set[int] = set()
    ended: set[int] = set()
    for frame in frames:
        if isinstance(frame, Ack):
            acked.update(frame.delivery_ids)
        elif isinstance(frame, Progress):
            assert frame.delivery_id in acked and frame.delivery_id not in ended, frames
        elif isinstance(frame, Result):
            assert frame.delivery_id in acked, frames
            ended.add(frame.delivery_id)


async def test_an_old_daemon_gets_every_frame_in_its_own_message(daemon: FakeDaemon, start_agent: StartAgent) -> None:
    await start_agent()
    session = await daemon.next_session()
    await session.send(*(daemon.task(i) for i in range(1, 21)))
    frames = await frames_until_results(session, set(range(1, 21)))
    check_order(frames)
    assert [count for count, _ in session.messages] == [1] * len(frames)


async def test_frames_waiting_together_go_out_as_one_batch(daemon: FakeDaemon, start_agent: StartAgent) -> None:
    daemon.features = ("batch",)
    await start_agent()
    session = await daemon.next_session()
    await session.send(*(daemon.task(i) for i in range(1, 21)))
    frames = await frames_until_results(session, set(range(1, 21)))
    check_order(frames)
    assert {r.delivery_id for r in frames if isinstance(r, Result)} == set(range(1, 21))
    assert sum(count for count, _ in session.messages) == len(frames)
    assert max(count for count, _ in session.messages) > 1
    assert len(session.messages) < len(frames)


async def test_a_batch_never_outgrows_the_limit(daemon: FakeDaemon, start_agent: StartAgent) -> None:
    agent = Agent()

    @agent.command("big")
    async def big(args: dict[str, Any]) -> str:
        return "x" * (BATCH_MAX_BYTES // 3)

    daemon.features = ("batch",)
    await start_agent(agent)
    session = await daemon.next_session()
    await session.send(*(daemon.task(i, "big") for i in range(1, 9)))
    frames = await frames_until_results(session, set(range(1, 9)))
    assert all(r.ok for r in frames if isinstance(r, Result))
    assert all(size <= BATCH_MAX_BYTES + 64 for count, size in session.messages if count > 1)


async def test_tasks_of_a_batch_are_one_burst(daemon: FakeDaemon, start_agent: StartAgent) -> None:
    daemon.features = ("batch",)
    running = await start_agent()
    session = await daemon.next_session()
    await session.send_batch(*(daemon.task(i) for i in range(1, 6)))
    assert (await session.expect(Ack, skip=())).delivery_ids == [1, 2, 3, 4, 5]
    await frames_until_results(session, {1, 2, 3, 4, 5})
    assert running.journal.counts()["finished"] == 5


async def test_a_batch_is_applied_in_order(daemon: FakeDaemon, start_agent: StartAgent) -> None:
    """A cancel after its task in the same batch finds it journaled: it never runs. A
    ``committed`` before a task is done by the time that task is acknowledged."""
    daemon.features = ("batch",)
    running = await start_agent()
    session = await daemon.next_session()
    await session.send(daemon.task(1))
    await session.expect(Result, skip=(Ack, Progress))
    await session.send_batch(Committed(delivery_ids=[1]), daemon.task(2), Cancel(delivery_id=2), daemon.task(3))
    assert (await session.expect(Ack, skip=())).delivery_ids == [2]
    assert (1, 1) not in running.journal.holding()  # delivery 1 was confirmed before
    assert (await session.expect(Ack, skip=())).delivery_ids == [3]
    frames = await frames_until_results(session, {3})
    assert not any(isinstance(f, Progress | Result) and f.delivery_id == 2 for f in frames)
    assert running.journal.state(2) == "cancelled"


async def test_a_bad_frame_in_a_batch_is_logged_and_the_rest_applied(
    daemon: FakeDaemon, start_agent: StartAgent, caplog: pytest.LogCaptureFixture
) -> None:
    daemon.features = ("batch",)
    await start_agent()
    session = await daemon.next_session()
    unknown = MSGPACK.encode_value({"t": "no_such_frame"})
    nested = MSGPACK.encode(Batch(frames=[]))
    await session.send_batch(daemon.task(1), unknown, daemon.task(2), nested, daemon.task(3))
    assert (await session.expect(Ack, skip=())).delivery_ids == [1, 2, 3]
    await frames_until_results(session, {1, 2, 3})
    assert caplog.text.count("event=bad_frame") == 2
    assert "unknown frame type" in caplog.text and "a batch cannot hold a batch" in caplog.text


async def test_stop_sends_the_last_results_then_closes(daemon: FakeDaemon, start_agent: StartAgent) -> None:
    """The close is never part of a batch: what was queued before it arrives, then 1000."""
    daemon.features = ("batch",)
    running = await start_agent()
    session = await daemon.next_session()
    await session.send_batch(*(daemon.task(i) for i in range(1, 11)))
    await session.expect(Ack, skip=())
    running.client.stop()
    assert await session.wait_closed() == 1000
    await running.stopped()
    sent: list[Frame] = []
    while not session.frames.empty():
        sent.append(session.frames.get_nowait())
    results = {f.delivery_id for f in sent if isinstance(f, Result)}
    outbox = running.journal.outbox()
    counts = running.journal.counts()
    assert len(outbox) == counts["finished"] == len(results)  # every finished result was sent
    assert counts["finished"] + counts["pending"] == 10


def results_per_message(session: FakeSession, frames: list[Frame]) -> list[int]:
    """How many results each message held, for the messages that held any (in order)."""
    counts: list[int] = []
    at = 0
    for count, _ in session.messages:
        held = sum(isinstance(f, Result) for f in frames[at : at + count])
        at += count
        if held:
            counts.append(held)
    return counts


async def test_a_busy_agent_gathers_its_results_into_few_messages(
    daemon: FakeDaemon, start_agent: StartAgent, monkeypatch: pytest.MonkeyPatch
) -> None:
    """2 x HOLD_FRAMES quick tasks through 4 slots: while runs wait for a slot, results
    gather until HOLD_FRAMES are waiting, so they go out as 2 messages (not one per 4), and
    the ack is not held back. The hold's timer is made long: only the count can end it here."""
    monkeypatch.setattr(outflow_module, "HOLD_SECONDS", 30.0)
    daemon.features = ("batch",)
    await start_agent()
    session = await daemon.next_session()
    n = 2 * HOLD_FRAMES
    await session.send_batch(*(daemon.task(i) for i in range(1, n + 1)))
    frames = await frames_until_results(session, set(range(1, n + 1)))
    check_order(frames)
    assert isinstance(frames[0], Ack) and session.messages[0][0] == 1  # the ack went alone, at once
    assert results_per_message(session, frames) == [HOLD_FRAMES, HOLD_FRAMES]


async def test_a_result_with_nothing_behind_it_is_sent_at_once(
    daemon: FakeDaemon, start_agent: StartAgent, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No backlog, no hold: with a 30 s hold, the results still arrive (within the fake
    daemon's 5 s timeout)."""
    monkeypatch.setattr(outflow_module, "HOLD_SECONDS", 30.0)
    daemon.features = ("batch",)
    await start_agent()
    session = await daemon.next_session()
    for i in (1, 2):
        await session.send(daemon.task(i))
        assert (await session.expect(Result, skip=(Ack, Progress))).delivery_id == i


class _Gate:
    """An agent whose ``wait`` command returns once the gate opens; :meth:`open` lets the
    runs waiting now go, and the runs started later wait for the next opening."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self.agent = Agent()

        @self.agent.command("wait")
        async def wait(args: dict[str, Any]) -> str:
            await self._event.wait()
            return "done"

    def open(self) -> None:
        self._event.set()
        self._event = asyncio.Event()


async def test_an_idle_agent_sends_an_ack_with_the_first_frames_of_the_runs_it_started(
    daemon: FakeDaemon, start_agent: StartAgent, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A task for an idle agent runs at once, so its ack waits the moments until that run's
    first frame: the result of a quick one, the start report of one that waits. One message
    each time, not two. The hold's timer is made long: the frame, not the timer, ends it."""
    gate = _Gate()
    monkeypatch.setattr(outflow_module, "HOLD_SECONDS", 30.0)
    daemon.features = ("batch",)
    await start_agent(gate.agent)
    session = await daemon.next_session()
    await session.send(daemon.task(1))
    ack, result = await session.next(), await session.next()
    assert isinstance(ack, Ack) and ack.delivery_ids == [1]
    assert isinstance(result, Result) and (result.delivery_id, result.ok) == (1, True)
    assert session.messages[-1][0] == 2
    await session.send(daemon.task(2, "wait"))
    ack, started = await session.next(), await session.next()
    assert isinstance(ack, Ack) and ack.delivery_ids == [2]
    assert isinstance(started, Progress) and started.delivery_id == 2
    assert session.messages[-1][0] == 2
    gate.open()
    result = await session.expect(Result, skip=())
    assert result.delivery_id == 2 and session.messages[-1][0] == 1  # nothing was due after it


async def test_held_frames_go_out_with_an_ack_or_after_the_hold(
    daemon: FakeDaemon, start_agent: StartAgent, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One slot, a handler that waits, a run queued behind it: the start report is held.
    With a 30 s hold, the next task's ack takes it along at once; with a 50 ms hold, a
    result is held no longer than that."""
    gate = _Gate()
    monkeypatch.setattr(outflow_module, "HOLD_SECONDS", 30.0)
    daemon.features = ("batch",)
    await start_agent(gate.agent, concurrency=1)
    session = await daemon.next_session()
    await session.send(daemon.task(1, "wait"), daemon.task(2, "wait"))
    assert (await session.expect(Ack, skip=())).delivery_ids == [1, 2]
    await session.send(daemon.task(3, "wait"))
    started, ack = await session.next(), await session.next()
    assert isinstance(started, Progress) and started.delivery_id == 1
    assert isinstance(ack, Ack) and ack.delivery_ids == [3]
    assert session.messages[-1][0] == 2  # one message

    monkeypatch.setattr(outflow_module, "HOLD_SECONDS", 0.05)
    gate.open()  # run 2 waits in its turn, with run 3 queued behind it
    result, started = await session.next(), await session.next()
    assert isinstance(result, Result) and result.delivery_id == 1
    assert isinstance(started, Progress) and started.delivery_id == 2


def noting_agent() -> tuple[Agent, list[int]]:
    """An agent whose sync command ``note`` notes the delivery id it ran for."""
    agent = Agent()
    ran: list[int] = []

    @agent.command("note")
    def note(args: dict[str, Any], *, ctx: Any) -> None:
        ran.append(ctx.delivery_id)

    return agent, ran


async def test_a_sync_command_cancelled_in_the_batch_that_brought_it_never_runs(
    daemon: FakeDaemon, start_agent: StartAgent
) -> None:
    """Issue 17.14: a sync handler cannot be interrupted once started, so a cancel read with
    its task must be applied before the task is claimed (it was claimed, then the handler
    ran in its thread and its result was dropped)."""
    agent, ran = noting_agent()
    daemon.features = ("batch",)
    running = await start_agent(agent)
    session = await daemon.next_session()
    await session.send_batch(daemon.task(2, "note"), Cancel(delivery_id=2), daemon.task(3, "note"))
    await frames_until_results(session, {3})
    assert ran == [3] and running.journal.state(2) == "cancelled"


async def test_a_task_cancelled_after_a_committed_in_the_same_read_never_runs(
    daemon: FakeDaemon, start_agent: StartAgent
) -> None:
    """Issue 17.14: the agent applies every frame already received before starting new work,
    whatever lies between a task and its cancel (a ``committed`` did start it: it was applied
    by journaling and claiming the tasks read before it)."""
    agent, ran = noting_agent()
    daemon.features = ("batch",)
    running = await start_agent(agent)
    session = await daemon.next_session()
    await session.send(daemon.task(1, "note"))
    await session.expect(Result, skip=(Ack, Progress))
    await session.send_batch(daemon.task(2, "note"), Committed(delivery_ids=[1]), Cancel(delivery_id=2),
                             daemon.task(3, "note"))
    await frames_until_results(session, {3})
    assert ran == [1, 3] and running.journal.state(2) == "cancelled"
    assert (1, 1) not in running.journal.holding()
