"""The journal: dedup, outbox, recovery after a crash, pruning, file permissions."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from tether.agent.journal import DEDUP_RETENTION, RESTARTED_WHILE_RUNNING, Identity, Journal
from tether.protocol import MSGPACK, Result, Task, decode_to_daemon


def task(delivery_id: int, priority: int = 1, command: str = "echo") -> Task:
    return Task(delivery_id=delivery_id, task_id=delivery_id * 10, command=command,
                args=msgspec.Raw(MSGPACK.encode_value({"n": delivery_id})), priority=priority)


def result(delivery_id: int, ok: bool = True) -> bytes:
    return MSGPACK.encode(Result(delivery_id=delivery_id, ok=ok, started_at=1.0, finished_at=2.0))


def outbox_results(journal: Journal) -> list[Result]:
    frames = [decode_to_daemon(blob) for blob in journal.outbox()]
    assert all(isinstance(f, Result) for f in frames)
    return frames  # type: ignore[return-value]


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    with Journal(tmp_path / "state" / "journal.sqlite") as j:
        yield j


def test_accept_journals_new_deliveries_and_dedups_a_burst(journal: Journal) -> None:
    accepted = journal.accept([task(1, priority=0), task(2, priority=3), task(1, priority=0)])
    assert accepted.ack == [1, 2]
    assert accepted.new == [(0, 1), (3, 2)]
    assert accepted.resend == []
    assert journal.pending() == [(0, 1), (3, 2)]
    assert journal.holding() == [1, 2]


def test_redelivery_is_acked_but_never_new(journal: Journal) -> None:
    journal.accept([task(1), task(2), task(3), task(4)])
    journal.claim(2)
    journal.claim(3)
    journal.finish(3, result(3))
    journal.claim(4)
    journal.finish(4, result(4))
    journal.confirm([4])
    journal.accept([task(5)])
    journal.cancel(5)

    again = journal.accept([task(1), task(2), task(3), task(4), task(5), task(6)])
    assert again.new == [(1, 6)]
    assert sorted(again.ack) == [1, 2, 3, 6]  # not 4 (confirmed) nor 5 (cancelled)
    assert again.resend == [result(3)]
    assert again.duplicates == 5


def test_claim_moves_pending_to_running_once(journal: Journal) -> None:
    journal.accept([task(1, priority=2, command="scan")])
    claimed = journal.claim(1)
    assert claimed is not None
    assert (claimed.task_id, claimed.command, claimed.priority, claimed.run) == (10, "scan", 2, 1)
    assert msgspec.msgpack.decode(claimed.args) == {"n": 1}
    assert journal.claim(1) is None
    assert journal.claim(99) is None
    assert journal.state(1) == "running"


def test_finish_puts_the_result_in_the_outbox_until_confirmed(journal: Journal) -> None:
    journal.accept([task(1), task(2)])
    assert not journal.finish(1, result(1))  # not running yet
    journal.claim(1)
    assert journal.finish(1, result(1))
    assert journal.outbox() == [result(1)]
    assert journal.holding() == [1, 2]
    assert journal.confirm([1, 77]) == 1
    assert journal.outbox() == []
    assert journal.holding() == [2]
    assert journal.state(1) == "finished"


def test_cancel_depends_on_the_state(journal: Journal) -> None:
    journal.accept([task(1), task(2), task(3)])
    journal.claim(2)
    journal.claim(3)
    journal.finish(3, result(3))
    assert journal.cancel(1) == "pending"
    assert journal.cancel(2) == "running"
    assert journal.cancel(3) == "finished"
    assert journal.cancel(4) is None  # unknown: leaves a tombstone
    assert [journal.state(i) for i in (1, 2, 3, 4)] == ["cancelled", "cancelled", "finished", "cancelled"]
    assert journal.claim(1) is None
    assert not journal.finish(2, result(2))  # a cancelled delivery sends no result
    assert journal.accept([task(4)]).new == []
    assert journal.holding() == [3]


def test_refuse_drops_only_results_in_the_outbox(journal: Journal) -> None:
    journal.accept([task(1)])
    journal.claim(1)
    journal.finish(1, result(1, ok=False))
    assert journal.refuse(1)
    assert not journal.refuse(1)
    assert journal.outbox() == []


def test_counts(journal: Journal) -> None:
    journal.accept([task(i) for i in range(1, 6)])
    for i in (2, 3, 4):
        journal.claim(i)
    journal.finish(3, result(3))
    journal.finish(4, result(4))
    journal.confirm([4])
    journal.cancel(5)
    assert journal.counts() == {"pending": 1, "running": 1, "outbox": 1, "finished": 2, "cancelled": 1}


def test_recover_turns_running_into_failed_results_and_keeps_pending(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    with Journal(path) as before:
        before.accept([task(1), task(2)])
        before.claim(1)
    with Journal(path) as after:
        assert after.recover() == [1]
        assert after.recover() == []
        [failed] = outbox_results(after)
        assert (failed.delivery_id, failed.ok, failed.error) == (1, False, RESTARTED_WHILE_RUNNING)
        assert failed.started_at > 0
        assert after.claim(1) is None  # never re-run
        assert after.pending() == [(1, 2)]


def test_survives_sigkill_in_the_middle_of_a_run(tmp_path: Path) -> None:
    """A real kill -9 after claim: the committed state is there, the command does not rerun."""
    path = tmp_path / "journal.sqlite"
    script = textwrap.dedent(f"""
        import os, signal, msgspec
        from tether.agent.journal import Journal
        from tether.protocol import MSGPACK, Task
        j = Journal({str(path)!r})
        args = msgspec.Raw(MSGPACK.encode_value({{}}))
        j.accept([Task(delivery_id=i, task_id=i, command="echo", args=args) for i in (1, 2, 3)])
        j.claim(1)
        j.claim(2)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=30)
    assert done.returncode == -9, done.stderr.decode()
    with Journal(path) as journal:
        assert sorted(journal.recover()) == [1, 2]
        assert [r.delivery_id for r in outbox_results(journal)] == [1, 2]
        assert journal.pending() == [(1, 3)]


def test_prune_forgets_confirmed_and_cancelled_after_the_retention(tmp_path: Path) -> None:
    clock = Clock()
    with Journal(tmp_path / "journal.sqlite", clock=clock) as journal:
        journal.accept([task(1), task(2), task(3), task(4)])
        for i in (1, 2):
            journal.claim(i)
            journal.finish(i, result(i))
        journal.confirm([1])
        journal.cancel(3)
        clock.now += DEDUP_RETENTION - 1
        assert journal.prune() == 0
        clock.now += 2
        assert journal.prune() == 2
        assert [journal.state(i) for i in (1, 2, 3, 4)] == [None, "finished", None, "pending"]
        assert DEDUP_RETENTION >= 7 * 86_400 + 86_400  # a week's ttl plus margin


def test_files_are_private_and_the_token_is_not_in_repr(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with Journal(state / "journal.sqlite") as journal:
        identity = Identity(server="ws://d", agent_id="a1", token="TOPSECRET", machine_uuid="m", tags=("x",))
        journal.set_identity(identity)
        assert journal.identity() == identity
        assert "TOPSECRET" not in repr(identity)
    assert stat.S_IMODE(os.stat(state / "journal.sqlite").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(state).st_mode) == 0o700


def test_a_new_identity_drops_the_old_agents_deliveries(journal: Journal) -> None:
    journal.set_identity(Identity(server="ws://d", agent_id="a1", token="t1"))
    journal.accept([task(1)])
    assert journal.set_identity(Identity(server="ws://d", agent_id="a1", token="t2")) == 0
    assert journal.holding() == [1]  # same agent, new token: keep
    assert journal.set_identity(Identity(server="ws://d", agent_id="a2", token="t3")) == 1
    assert journal.holding() == []


def test_a_journal_from_a_newer_agent_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    Journal(path).close()
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version=99")
    db.close()
    with pytest.raises(RuntimeError, match="newer tether-agent"):
        Journal(path)


def test_in_memory_journal_for_simulated_agents() -> None:
    with Journal(":memory:") as journal:
        assert journal.accept([task(1)]).new == [(1, 1)]
        assert journal.identity() is None
