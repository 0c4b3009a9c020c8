"""The runner's journal steps: the tasks journaled, the claims and the finishes of one loop
turn share a transaction, and a journal failure in one still costs only what it is about."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
import pytest

from tether.agent import Agent
from tether.agent.journal import Journal
from tether.agent.runner import Intake, Runner
from tether.protocol import MSGPACK, Ack, Cancel, Committed, Progress, Result, Task, decode_to_daemon

if TYPE_CHECKING:
    from conftest import FakeDaemon, StartAgent


async def test_a_journal_failure_costs_only_its_run(
    daemon: FakeDaemon, start_agent: StartAgent, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """The journal refuses delivery 2's finish. Runs that ended with it in the same turn, so
    in the same transaction, still finish; 2 stays ``running`` (it fails on restart)."""
    running = await start_agent()
    with closing(sqlite3.connect(tmp_path / "agent-1.sqlite")) as db:
        db.execute("CREATE TRIGGER refuse BEFORE UPDATE OF state ON deliveries "
                   "WHEN NEW.delivery_id = 2 AND NEW.state = 'finished' "
                   "BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END")
        db.commit()
    session = await daemon.next_session()
    await session.send(*(daemon.task(i) for i in range(1, 7)))
    results = {(await session.expect(Result, skip=(Ack, Progress))).delivery_id for _ in range(5)}
    assert results == {1, 3, 4, 5, 6}
    assert running.journal.state(2) == "running"
    assert "event=delivery_crashed" in caplog.text and "delivery_id=2" in caplog.text


async def _eventually(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    """Wait (polling: the condition is a journal's or a log's state) until ``condition``."""
    for _ in range(int(seconds / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"not true within {seconds} s")


def _count_commits(journal: Journal) -> list[str]:
    """The statements that end a write transaction on ``journal``'s connection, as SQLite
    runs them (the endpoint's disk sees one WAL commit each): every ``COMMIT``, and every
    write run outside a transaction (it commits alone)."""
    commits: list[str] = []
    db = journal._db

    def traced(sql: str) -> None:
        verb = sql.split(None, 1)[0].upper()
        if verb == "COMMIT" or (verb in ("INSERT", "UPDATE", "DELETE") and not db.in_transaction):
            commits.append(sql)

    db.set_trace_callback(traced)
    return commits


async def test_a_task_for_a_free_slot_is_journaled_and_claimed_in_one_commit(
    daemon: FakeDaemon, start_agent: StartAgent
) -> None:
    """An idle agent gets one task: journaling it (before the ack) and claiming it (before
    it runs) are one commit, finishing it a second; its ``committed`` is the third. The ack
    still comes first, and names the task."""
    running = await start_agent()
    session = await daemon.next_session()
    commits = _count_commits(running.journal)
    await session.send(daemon.task(1))
    ack = await session.expect(Ack)
    assert ack.delivery_ids == [1]
    result = await session.expect(Result)
    assert (result.delivery_id, result.ok) == (1, True)
    assert len(commits) == 2
    await session.send(Committed(delivery_ids=[1]))
    await _eventually(lambda: not running.journal.outbox())
    assert len(commits) == 3


async def test_a_burst_the_journal_refuses_is_not_acknowledged(
    daemon: FakeDaemon, start_agent: StartAgent, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """The journal cannot take a burst of tasks: none of it is acknowledged or run (the
    daemon pushes them again on the next session), it is logged, and the next burst is
    served as usual."""
    running = await start_agent()
    session = await daemon.next_session()
    with closing(sqlite3.connect(tmp_path / "agent-1.sqlite")) as db:
        db.execute("CREATE TRIGGER refuse BEFORE INSERT ON deliveries WHEN NEW.delivery_id = 9 "
                   "BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END")
        db.commit()
    await session.send_batch(daemon.task(9), daemon.task(10))
    await _eventually(lambda: "event=journal_write_failed" in caplog.text)
    await session.send(daemon.task(11))
    ack = await session.expect(Ack)
    assert ack.delivery_ids == [11]
    assert (await session.expect(Result)).delivery_id == 11
    assert running.journal.state(9) is None and running.journal.state(10) is None


async def test_a_write_that_shared_a_failed_step_is_retried_alone(tmp_path: Path) -> None:
    """The finish of run 1 and the journaling of task 2 share a step; the journal refuses
    the finish, so the whole transaction rolls back. Task 2 is journaled again on its own,
    its ``then`` runs, and it runs; run 1 stays ``running`` (it fails on restart)."""
    journal = Journal(tmp_path / "journal.sqlite")
    with closing(sqlite3.connect(tmp_path / "journal.sqlite")) as db:
        db.execute("CREATE TRIGGER refuse BEFORE UPDATE OF state ON deliveries "
                   "WHEN NEW.delivery_id = 1 AND NEW.state = 'finished' "
                   "BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END")
        db.commit()
    acknowledged: list[int] = []
    agent = Agent()

    def journal_task_2() -> Intake:
        accepted = journal.accept([Task(delivery_id=2, task_id=1002, command="echo",
                                        args=msgspec.Raw(MSGPACK.encode_value({"n": 2})))])
        return Intake(accepted.new, accepted.fresh, lambda: acknowledged.append(2))

    @agent.command("echo")
    async def echo(args: dict[str, int]) -> int:
        if args["n"] == 1:
            runner.write(journal_task_2)  # the same step as this run's finish
        return args["n"]

    runner = Runner(agent.commands, journal, concurrency=1)
    results = _Results(runner)
    _queue(journal, runner, range(1, 2))
    runner.start()
    assert await results.wait_for(1) == [2]
    assert acknowledged == [2]
    assert journal.state(1) == "running" and journal.state(2) == "finished"
    await runner.stop(1.0)
    await results.close()
    journal.close()


async def test_every_run_of_a_long_burst_runs_once_in_order(daemon: FakeDaemon, start_agent: StartAgent) -> None:
    """Many runs through few slots: each claimed once, highest priority then oldest first;
    cancelled ones and unknown commands are skipped without stalling the queue."""
    agent = Agent()
    order: list[int] = []

    @agent.command("record")
    async def record(args: dict[str, int]) -> int:
        order.append(args["n"])
        return args["n"]

    running = await start_agent(agent, concurrency=2)
    session = await daemon.next_session()
    tasks = [daemon.task(i, "record" if i not in (20, 21) else "unknown", priority=3 if i % 10 == 0 else 1)
             for i in range(10, 60)]
    cancelled = (35, 36, 37, 38)
    # One message: one burst, ordered as a whole (frames read one by one could start the
    # first ones in free slots before the rest had come).
    await session.send_batch(*tasks, *(Cancel(delivery_id=i) for i in cancelled))
    results = [await session.expect(Result, skip=(Ack, Progress)) for _ in range(50 - len(cancelled))]
    assert sorted(r.delivery_id for r in results) == [i for i in range(10, 60) if i not in cancelled]
    assert [r.delivery_id for r in results if not r.ok] == [20, 21]
    assert order[:4] == [10, 30, 40, 50]
    assert order[4:] == [i for i in range(11, 60) if i % 10 and i not in (21, *cancelled)]
    assert running.journal.counts()["finished"] == 46


class _Results:
    """The result frames a runner put into its outflow, decoded, and a way to wait for some
    (the outflow is opened as for a session, and read as the client's writer reads it)."""

    def __init__(self, runner: Runner) -> None:
        self.frames: list[Result] = []
        self._more = asyncio.Event()
        runner.outflow.open(())
        self._reader = asyncio.create_task(self._read(runner))

    async def _read(self, runner: Runner) -> None:
        while (message := await runner.outflow.next_message(False)) is not None:
            for blob in message:
                frame = decode_to_daemon(blob)
                if isinstance(frame, Result):
                    self.frames.append(frame)
                    self._more.set()

    async def wait_for(self, count: int, seconds: float = 5.0) -> list[int]:
        async with asyncio.timeout(seconds):
            while len(self.frames) < count:
                self._more.clear()
                await self._more.wait()
        return [r.delivery_id for r in self.frames]

    async def close(self) -> None:
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)


def _echo_agent() -> Agent:
    agent = Agent()

    @agent.command("echo")
    async def echo(args: dict[str, int]) -> int:
        return args["n"]

    return agent


def _queue(journal: Journal, runner: Runner, ids: range) -> None:
    accepted = journal.accept([
        Task(delivery_id=i, task_id=1000 + i, command="echo", args=msgspec.Raw(MSGPACK.encode_value({"n": i})))
        for i in ids
    ])
    for priority, delivery_id, run in accepted.new:
        runner.submit(priority, delivery_id, run)


async def test_quick_runs_finish_and_claim_in_one_transaction_per_round(tmp_path: Path) -> None:
    """A backlog of quick runs through 4 slots: each journal transaction finishes the 4 runs
    that just returned and claims the next 4, so 40 runs take 11 transactions (10 rounds and
    the last finishes), not twice as many. The endpoint's disk sees each one."""
    journal = Journal(tmp_path / "journal.sqlite")
    runner = Runner(_echo_agent().commands, journal, concurrency=4)
    results = _Results(runner)
    _queue(journal, runner, range(1, 41))
    commits = _count_commits(journal)
    runner.start()
    assert sorted(await results.wait_for(40)) == list(range(1, 41))
    assert journal.counts()["finished"] == 40
    assert len(commits) == 11
    await runner.stop(1.0)
    await results.close()
    journal.close()


async def test_a_run_cancelled_before_its_handler_started_frees_its_slot(tmp_path: Path) -> None:
    """The daemon's cancel reaches a run claimed in this loop turn, before its handler took a
    step. With one slot, the next run must still start."""
    journal = Journal(tmp_path / "journal.sqlite")
    runner = Runner(_echo_agent().commands, journal, concurrency=1)
    results = _Results(runner)
    runner.start()
    _queue(journal, runner, range(1, 2))
    started: list[bool] = []
    # Runs after the step that claims run 1 and before that run's first step.
    asyncio.get_running_loop().call_soon(lambda: (started.append(journal.state(1) == "running"), runner.cancel(1)))
    _queue(journal, runner, range(2, 3))
    assert await results.wait_for(1) == [2]
    assert started == [True] and journal.state(1) == "cancelled"
    await runner.stop(1.0)
    await results.close()
    journal.close()
