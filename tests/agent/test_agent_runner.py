"""The runner's journal steps: claims and finishes of one loop turn share a transaction, and
a journal failure in one still costs only the run it is about."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tether.agent import Agent
from tether.protocol import Ack, Cancel, Progress, Result

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
    await session.send(*tasks, *(Cancel(delivery_id=i) for i in cancelled))
    results = [await session.expect(Result, skip=(Ack, Progress)) for _ in range(50 - len(cancelled))]
    assert sorted(r.delivery_id for r in results) == [i for i in range(10, 60) if i not in cancelled]
    assert [r.delivery_id for r in results if not r.ok] == [20, 21]
    assert order[:4] == [10, 30, 40, 50]
    assert order[4:] == [i for i in range(11, 60) if i % 10 and i not in (21, *cancelled)]
    assert running.journal.counts()["finished"] == 46
