"""The journal: dedup by (delivery, run), outbox, cancel, recovery after a crash, pruning,
the v1 -> v2 -> v3 migrations, file permissions."""

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

from tether.agent import journal as journal_module
from tether.agent import journal_schema
from tether.agent.journal import DEDUP_RETENTION, RESTARTED_WHILE_RUNNING, TOMBSTONE_RUN, Identity, Journal
from tether.agent.journal_schema import SCHEMA_VERSION
from tether.agent.tls import TLSFiles
from tether.protocol import MSGPACK, Result, Task, decode_to_daemon, unpack


def task(delivery_id: int, priority: int = 1, command: str = "echo", run: int = 1) -> Task:
    return Task(delivery_id=delivery_id, task_id=delivery_id * 10, command=command,
                args=msgspec.Raw(MSGPACK.encode_value({"n": delivery_id})), priority=priority, run=run)


def result(delivery_id: int, ok: bool = True, run: int = 1) -> bytes:
    return MSGPACK.encode(Result(delivery_id=delivery_id, ok=ok, started_at=1.0, finished_at=2.0, run=run))


def finished(journal: Journal, delivery_id: int, run: int = 1) -> bytes:
    """Claim and finish a journaled run; its result is in the outbox."""
    assert journal.claim(delivery_id, run) is not None
    blob = result(delivery_id, run=run)
    assert journal.finish(delivery_id, run, blob)
    return blob


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
    assert accepted.ack == [(1, 1), (2, 1)]
    assert accepted.new == [(0, 1, 1), (3, 2, 1)]
    assert accepted.resend == []
    assert journal.pending() == [(0, 1, 1), (3, 2, 1)]
    assert journal.holding() == [(1, 1), (2, 1)]


def test_redelivery_is_acked_but_never_new(journal: Journal) -> None:
    journal.accept([task(1), task(2), task(3), task(4)])
    journal.claim(2, 1)
    journal.claim(3, 1)
    journal.finish(3, 1, result(3))
    journal.claim(4, 1)
    journal.finish(4, 1, result(4))
    journal.confirm([(4, 1)])
    journal.accept([task(5)])
    journal.cancel(5)

    again = journal.accept([task(1), task(2), task(3), task(4), task(5), task(6)])
    assert again.new == [(1, 6, 1)]
    assert again.ack == [(1, 1), (2, 1), (3, 1), (6, 1)]  # not 4 (confirmed) nor 5 (cancelled)
    assert again.resend == [result(3)]
    assert again.duplicates == 5


def test_claim_moves_pending_to_running_once(journal: Journal) -> None:
    journal.accept([task(1, priority=2, command="scan")])
    claimed = journal.claim(1, 1)
    assert claimed is not None
    assert (claimed.task_id, claimed.command, claimed.priority, claimed.run) == (10, "scan", 2, 1)
    assert msgspec.msgpack.decode(claimed.args) == {"n": 1}
    assert journal.claim(1, 1) is None
    assert journal.claim(99, 1) is None
    assert journal.claim(1, 2) is None  # no such run
    assert journal.state(1) == "running"


def test_runs_accepted_in_a_transaction_are_claimed_in_it_without_reading_them_back(journal: Journal) -> None:
    journal.accept([task(1)])  # journaled earlier: read back
    statements: list[str] = []
    journal._db.set_trace_callback(statements.append)
    with journal.transaction():
        accepted = journal.accept([task(2, priority=3), task(3)])
        claimed = journal.claim_many([(2, 1), (1, 1)], fresh=accepted.fresh)
    assert [c and (c.delivery_id, c.task_id, c.priority, c.command) for c in claimed] == [
        (2, 20, 3, "echo"), (1, 10, 1, "echo")]
    assert claimed[0] is not None and unpack(claimed[0].args) == {"n": 2}
    reads = [s for s in statements if s.startswith("SELECT delivery_id, run, task_id")]
    assert len(reads) == 1 and "IN (1)" in reads[0]  # only the run journaled before
    assert (journal.state(1), journal.state(2), journal.state(3)) == ("running", "running", "pending")
    with pytest.raises(RuntimeError, match="transaction that accepted them"):
        journal.claim_many([(3, 1)], fresh={(3, 1): (30, "echo", b"\x80", 1)})
    assert journal.state(3) == "pending"


def test_claim_many_and_finish_many_answer_per_run_in_order(journal: Journal) -> None:
    journal.accept([task(i) for i in range(1, 1201)])  # more ids than one IN (...) may hold
    journal.cancel(3)
    refs = [(5, 1), (3, 1), (1, 1), (5, 1), (9999, 1), *((i, 1) for i in range(6, 1201))]
    claimed = journal.claim_many(refs)
    assert [c and (c.delivery_id, c.task_id, c.run) for c in claimed[:5]] == [(5, 50, 1), None, (1, 10, 1), None, None]
    assert all(c is not None for c in claimed[5:])
    assert journal.claim_many([(5, 1)]) == [None]  # taken
    assert journal.counts()["running"] == 1197
    kept = journal.finish_many([(5, 1, result(5)), (2, 1, result(2)), (5, 1, result(5)), (1, 1, result(1))])
    assert kept == [True, False, False, True]  # 2 was never claimed; 5 is finished once
    assert outbox_results(journal)[:2] == [decode_to_daemon(result(1)), decode_to_daemon(result(5))]
    assert journal.finish_many([(i, 1, result(i)) for i in range(6, 1201)]) == [True] * 1195
    assert journal.counts()["outbox"] == 1197


def test_finish_puts_the_result_in_the_outbox_until_confirmed(journal: Journal) -> None:
    journal.accept([task(1), task(2)])
    assert not journal.finish(1, 1, result(1))  # not running yet
    journal.claim(1, 1)
    assert not journal.finish(1, 2, result(1, run=2))  # another run
    assert journal.finish(1, 1, result(1))
    assert journal.outbox() == [result(1)]
    assert journal.holding() == [(1, 1), (2, 1)]
    assert journal.confirm([(1, 2), (77, 1)]) == 0  # names no result of the outbox
    assert journal.confirm([(1, 1)]) == 1
    assert journal.outbox() == []
    assert journal.holding() == [(2, 1)]
    assert journal.state(1) == "finished"


def test_cancel_depends_on_the_state(journal: Journal) -> None:
    journal.accept([task(1), task(2), task(3)])
    journal.claim(2, 1)
    journal.claim(3, 1)
    journal.finish(3, 1, result(3))
    assert journal.cancel(1) == "pending"
    assert journal.cancel(2) == "running"
    assert journal.cancel(3) == "finished"  # the result stands; later runs never run
    assert journal.cancel(4) is None  # unknown: leaves a tombstone
    assert journal.cancel(4) == "cancelled"
    assert [journal.state(i) for i in (1, 2, 3, 4)] == ["cancelled", "cancelled", "cancelled", "cancelled"]
    assert journal.state(3, run=1) == "finished"
    assert journal.claim(1, 1) is None
    assert not journal.finish(2, 1, result(2))  # a cancelled delivery sends no result
    assert journal.accept([task(4)]).new == []
    assert journal.outbox() == [result(3)]
    assert journal.holding() == [(3, 1)]


def test_refuse_drops_only_results_in_the_outbox(journal: Journal) -> None:
    journal.accept([task(1)])
    journal.claim(1, 1)
    journal.finish(1, 1, result(1, ok=False))
    assert journal.refuse(1) == 1
    assert journal.refuse(1) == 0
    assert journal.outbox() == []


def test_counts(journal: Journal) -> None:
    journal.accept([task(i) for i in range(1, 6)])
    for i in (2, 3, 4):
        journal.claim(i, 1)
    journal.finish(3, 1, result(3))
    journal.finish(4, 1, result(4))
    journal.confirm([(4, 1)])
    journal.cancel(5)
    assert journal.counts() == {"pending": 1, "running": 1, "outbox": 1, "finished": 2, "cancelled": 1}


def test_recover_turns_running_into_failed_results_and_keeps_pending(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    with Journal(path) as before:
        before.accept([task(1), task(2)])
        before.claim(1, 1)
    with Journal(path) as after:
        assert after.recover() == [(1, 1)]
        assert after.recover() == []
        [failed] = outbox_results(after)
        assert (failed.delivery_id, failed.run, failed.ok, failed.error) == (1, 1, False, RESTARTED_WHILE_RUNNING)
        assert failed.started_at > 0
        assert after.claim(1, 1) is None  # never re-run
        assert after.pending() == [(1, 2, 1)]


def test_survives_sigkill_in_the_middle_of_a_run(tmp_path: Path) -> None:
    """A real kill -9 after claim: the committed state is there, the command does not rerun.
    Delivery 2 was in its third run (a polling command): its failed result names run 3."""
    path = tmp_path / "journal.sqlite"
    script = textwrap.dedent(f"""
        import os, signal, msgspec
        from tether.agent.journal import Journal
        from tether.protocol import MSGPACK, Task
        j = Journal({str(path)!r})
        args = msgspec.Raw(MSGPACK.encode_value({{}}))
        j.accept([Task(delivery_id=i, task_id=i, command="echo", args=args, run=3 if i == 2 else 1)
                  for i in (1, 2, 3)])
        j.claim(1, 1)
        j.claim(2, 3)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=30)
    assert done.returncode == -9, done.stderr.decode()
    with Journal(path) as journal:
        assert journal.recover() == [(1, 1), (2, 3)]
        assert [(r.delivery_id, r.run, r.ok) for r in outbox_results(journal)] == [(1, 1, False), (2, 3, False)]
        assert journal.pending() == [(1, 3, 1)]
        assert journal.holding() == [(1, 1), (2, 3), (3, 1)]


def test_a_shared_transaction_survives_sigkill_all_or_nothing(tmp_path: Path) -> None:
    """A real kill -9 around :meth:`Journal.transaction` (how the runner finishes and claims
    several runs at once). Journal A committed its block: 1 finished with its result in the
    outbox, 2 claimed. Journal B was killed inside its block: nothing of it happened, so 1
    is still running (it fails on restart, never reruns) and 2 is still pending (never
    started: its handler would only start after the commit)."""
    paths = {name: tmp_path / f"{name}.sqlite" for name in ("a", "b")}
    script = textwrap.dedent(f"""
        import os, signal, msgspec
        from tether.agent.journal import Journal
        from tether.protocol import MSGPACK, Result, Task
        args = msgspec.Raw(MSGPACK.encode_value({{}}))
        result = MSGPACK.encode(Result(delivery_id=1, ok=True, started_at=1.0, finished_at=2.0))
        for name in ("a", "b"):
            j = Journal({{"a": {str(paths["a"])!r}, "b": {str(paths["b"])!r}}}[name])
            j.accept([Task(delivery_id=i, task_id=i, command="echo", args=args) for i in (1, 2)])
            j.claim(1, 1)
            with j.transaction():
                assert j.finish(1, 1, result)
                assert j.claim(2, 1) is not None
                if name == "b":
                    os.kill(os.getpid(), signal.SIGKILL)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=30)
    assert done.returncode == -9, done.stderr.decode()
    with Journal(paths["a"]) as a:
        assert a.recover() == [(2, 1)]
        assert [(r.delivery_id, r.ok) for r in outbox_results(a)] == [(1, True), (2, False)]
        assert a.pending() == []
    with Journal(paths["b"]) as b:
        assert b.recover() == [(1, 1)]
        [failed] = outbox_results(b)
        assert (failed.delivery_id, failed.ok, failed.error) == (1, False, RESTARTED_WHILE_RUNNING)
        assert b.pending() == [(1, 2, 1)]


def test_a_lone_finish_or_confirm_is_one_statement_that_commits_by_itself(tmp_path: Path) -> None:
    """No BEGIN and COMMIT around a write of one statement: it is atomic alone, and another
    process reading the file sees it at once."""
    path = tmp_path / "journal.sqlite"
    with Journal(path) as journal, Journal(path) as reader:
        journal.accept([task(1)])
        assert journal.claim(1, 1) is not None
        statements: list[str] = []
        journal._db.set_trace_callback(statements.append)
        assert journal.finish(1, 1, result(1))
        assert reader.outbox() == [result(1)]
        assert journal.confirm([(1, 1)]) == 1
        assert reader.outbox() == [] and reader.state(1) == "finished"
        assert [s.split()[0] for s in statements] == ["UPDATE", "UPDATE"]


def test_a_failure_in_a_shared_transaction_rolls_all_of_it_back(journal: Journal) -> None:
    journal.accept([task(1), task(2)])
    assert journal.claim(1, 1) is not None
    with pytest.raises(sqlite3.IntegrityError), journal.transaction():
        assert journal.finish(1, 1, result(1))
        assert journal.claim(2, 1) is not None
        journal.accept([task(3)])
        journal._db.execute("INSERT INTO deliveries (delivery_id) VALUES (9)")  # NOT NULL fails
    assert (journal.state(1), journal.state(2), journal.state(3)) == ("running", "pending", None)
    assert journal.outbox() == []
    with journal.transaction():  # and the journal is usable again
        assert journal.finish(1, 1, result(1))
    assert journal.outbox() == [result(1)]


# -- runs of a delivery (polling commands) ---------------------------------------------


def test_each_run_of_a_delivery_is_journaled_and_run_once(journal: Journal) -> None:
    journal.accept([task(1)])
    run1 = finished(journal, 1, run=1)
    assert journal.outbox() == [run1]

    second = journal.accept([task(1, run=2)])
    assert (second.ack, second.new, second.duplicates) == ([(1, 2)], [(1, 1, 2)], 0)
    # Run 2 is pushed only once run 1's result is committed: a lost `committed` for run 1
    # must not keep its result in the outbox (and in hello.holding) for ever.
    assert journal.outbox() == []
    assert journal.holding() == [(1, 2)]
    assert journal.state(1) == "pending" and journal.state(1, run=1) == "finished"

    claimed = journal.claim(1, 2)
    assert claimed is not None and claimed.run == 2
    again = journal.accept([task(1, run=2)])  # re-pushed while running: acked, not new
    assert (again.ack, again.new, again.duplicates) == ([(1, 2)], [], 1)
    run2 = result(1, run=2)
    assert journal.finish(1, 2, run2)
    assert journal.accept([task(1, run=2)]).resend == [run2]
    assert journal.confirm([(1, 2)]) == 1
    assert journal.accept([task(1, run=2)]).ack == []  # confirmed: the daemon knows


def test_a_stale_run_is_ignored_once_a_later_one_is_here(journal: Journal) -> None:
    journal.accept([task(1)])
    finished(journal, 1, run=1)
    journal.accept([task(1, run=2)])
    journal.confirm([(1, 1)])
    stale = journal.accept([task(1, run=1)])
    assert (stale.ack, stale.new, stale.resend, stale.duplicates) == ([], [], [], 1)
    assert journal.pending() == [(1, 1, 2)]


def test_a_cancel_blocks_every_later_run(journal: Journal) -> None:
    journal.accept([task(1), task(2)])
    run1 = finished(journal, 1, run=1)
    assert journal.cancel(1) == "finished"  # between runs: nothing to stop, a tombstone
    assert journal.state(1, run=TOMBSTONE_RUN) == "cancelled"
    later = journal.accept([task(1, run=2), task(1, run=5)])
    assert (later.ack, later.new) == ([], [])
    assert journal.outbox() == [run1]  # run 1's result still goes to the daemon

    finished(journal, 2, run=1)
    journal.accept([task(2, run=2)])
    assert journal.cancel(2) == "pending"  # run 2 waited to start
    assert journal.claim(2, 2) is None
    assert journal.cancel(2) == "cancelled"
    assert journal.counts()["cancelled"] == 2  # no second tombstone
    assert journal.accept([task(2, run=3)]).ack == []

    assert journal.cancel(3) is None  # before any run arrived
    assert journal.accept([task(3, run=1), task(3, run=2)]).new == []


def test_holding_pending_and_outbox_name_runs(journal: Journal) -> None:
    journal.accept([task(1), task(2, priority=3, run=4), task(3, run=2)])
    finished(journal, 3, run=2)
    assert journal.pending() == [(1, 1, 1), (3, 2, 4)]
    assert journal.holding() == [(1, 1), (2, 4), (3, 2)]
    [out] = outbox_results(journal)
    assert (out.delivery_id, out.run) == (3, 2)
    assert journal.confirm([(3, 1)]) == 0  # another run of 3: not this result
    assert journal.refuse(3) == 1  # a refusal names the delivery: any run of it


def test_prune_forgets_confirmed_and_cancelled_after_the_retention(tmp_path: Path) -> None:
    clock = Clock()
    with Journal(tmp_path / "journal.sqlite", clock=clock) as journal:
        journal.accept([task(1), task(2), task(3), task(4)])
        for i in (1, 2):
            finished(journal, i)
        journal.confirm([(1, 1)])
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
    assert journal.holding() == [(1, 1)]  # same agent, new token: keep
    assert journal.set_identity(Identity(server="ws://d", agent_id="a2", token="t3")) == 1
    assert journal.holding() == []


def test_the_same_agent_at_another_url_or_merged_keeps_its_deliveries(journal: Journal) -> None:
    """16.2: only another agent id drops the journal; a new URL or a merge keeps it."""
    assert journal.set_server("ws://new") is False  # nothing enrolled yet
    journal.set_identity(Identity(server="ws://d", agent_id="a1", token="t1"))
    journal.accept([task(1)])
    assert journal.set_identity(Identity(server="ws://other-name", agent_id="a1", token="t1")) == 0
    assert journal.set_server("wss://new:8765") is True
    journal.adopt_agent_id("a0")
    assert journal.identity() == Identity(server="wss://new:8765", agent_id="a0", token="t1")
    assert journal.holding() == [(1, 1)]


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
        assert journal.accept([task(1)]).new == [(1, 1, 1)]
        assert journal.identity() is None


# -- schema migration ------------------------------------------------------------------

V1_SCHEMA = """
CREATE TABLE IF NOT EXISTS identity (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    server TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    token TEXT NOT NULL,
    machine_uuid TEXT NOT NULL DEFAULT '',
    tags TEXT NOT NULL DEFAULT '[]',
    enrolled_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS deliveries (
    delivery_id INTEGER PRIMARY KEY,
    task_id INTEGER NOT NULL,
    command TEXT NOT NULL,
    args BLOB NOT NULL,
    priority INTEGER NOT NULL,
    run INTEGER NOT NULL DEFAULT 1,
    state TEXT NOT NULL CHECK (state IN ('pending', 'running', 'finished', 'cancelled')),
    result BLOB,            -- encoded Result frame while in the outbox, NULL once confirmed
    confirmed INTEGER NOT NULL DEFAULT 0,
    received_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL
);
CREATE INDEX IF NOT EXISTS deliveries_open ON deliveries (state) WHERE state IN ('pending', 'running');
CREATE INDEX IF NOT EXISTS deliveries_outbox ON deliveries (delivery_id) WHERE result IS NOT NULL;
CREATE INDEX IF NOT EXISTS deliveries_finished_at ON deliveries (finished_at);
"""
"""The schema tether-agent 0.1 wrote (journal schema 1), verbatim."""


def write_v1_journal(path: Path) -> None:
    """A journal as tether-agent 0.1 left it, written with its own statements: delivery 1
    pending, 2 running (the agent was killed), 3 finished with its result in the outbox,
    4 finished and confirmed, 5 cancelled after it arrived, 6 a tombstone (cancelled first)."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("BEGIN")
    for statement in V1_SCHEMA.split(";"):
        if statement.strip():
            db.execute(statement)
    db.execute("PRAGMA user_version=1")
    db.execute("INSERT INTO identity (id, server, agent_id, token, machine_uuid, tags, enrolled_at) "
               "VALUES (1, 'ws://d:1', 'a7', 'tok', 'm-7', '[\"lab\"]', 1.0)")
    db.executemany(
        "INSERT INTO deliveries (delivery_id, task_id, command, args, priority, run, state, received_at) "
        "VALUES (?, ?, ?, ?, ?, ?, 'pending', 10.0)",
        [(t.delivery_id, t.task_id, t.command, bytes(t.args), t.priority, t.run) for t in map(task, (1, 2, 3, 4, 5))],
    )
    db.execute("UPDATE deliveries SET state = 'running', started_at = 11.0 WHERE delivery_id IN (2, 3, 4)")
    for i in (3, 4):
        db.execute("UPDATE deliveries SET state = 'finished', result = ?, finished_at = 12.0 WHERE delivery_id = ?",
                   (result(i), i))
    db.execute("UPDATE deliveries SET result = NULL, confirmed = 1 WHERE delivery_id = 4")
    db.execute("UPDATE deliveries SET state = 'cancelled', finished_at = 13.0 WHERE delivery_id = 5")
    db.execute("INSERT INTO deliveries (delivery_id, task_id, command, args, priority, state, "
               "received_at, finished_at) VALUES (6, 0, '', x'80', 0, 'cancelled', 14.0, 14.0)")
    db.execute("COMMIT")
    db.close()


def schema_of(path: Path) -> tuple[int, list[str], list[str]]:
    """``user_version``, the primary key columns of ``deliveries``, and its index names."""
    db = sqlite3.connect(path)
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        columns = db.execute("PRAGMA table_info(deliveries)").fetchall()
        key = [c[1] for c in sorted(columns, key=lambda c: c[5]) if c[5]]
        indexes = sorted(r[0] for r in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'deliveries' AND sql IS NOT NULL"))
    finally:
        db.close()
    return version, key, indexes


def test_a_v1_journal_is_migrated_and_keeps_every_promise(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    write_v1_journal(path)
    assert schema_of(path) == (1, ["delivery_id"], ["deliveries_finished_at", "deliveries_open", "deliveries_outbox"])

    with Journal(path) as journal:
        assert schema_of(path) == (
            SCHEMA_VERSION, ["delivery_id", "run"], ["deliveries_finished_at", "deliveries_open", "deliveries_outbox"])
        assert journal.identity() == Identity("ws://d:1", "a7", "tok", "m-7", ("lab",), TLSFiles())
        assert journal.counts() == {"pending": 1, "running": 1, "outbox": 1, "finished": 2, "cancelled": 2}
        assert journal.holding() == [(1, 1), (2, 1), (3, 1)]
        assert journal.outbox() == [result(3)]
        assert journal.recover() == [(2, 1)]  # the interrupted run fails, with its run
        assert [(r.delivery_id, r.run, r.error) for r in outbox_results(journal)] == [
            (2, 1, RESTARTED_WHILE_RUNNING), (3, 1, "")]
        assert journal.pending() == [(1, 1, 1)]

        again = journal.accept([task(i) for i in range(1, 7)])
        assert again.new == [] and again.ack == [(1, 1), (2, 1), (3, 1)]
        assert journal.accept([task(5, run=2), task(6, run=2)]).ack == []  # v1 cancels still hold
        assert journal.accept([task(4, run=2)]).new == [(1, 4, 2)]  # a v1 delivery polls on
        assert journal.confirm([(3, 1)]) == 1


def test_a_failed_migration_leaves_the_v1_file_as_it_was(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The last step fails (after the copy, drop and rename): nothing of it may remain."""
    path = tmp_path / "journal.sqlite"
    write_v1_journal(path)
    monkeypatch.setattr(journal_schema, "_INDEXES", journal_schema._INDEXES + "CREATE INDEX broken ON nowhere (x);")
    with pytest.raises(sqlite3.OperationalError, match=r"no such table: main\.nowhere"):
        Journal(path)
    assert schema_of(path) == (1, ["delivery_id"], ["deliveries_finished_at", "deliveries_open", "deliveries_outbox"])
    monkeypatch.undo()
    with Journal(path) as journal:
        assert journal.holding() == [(1, 1), (2, 1), (3, 1)]
        assert journal.outbox() == [result(3)]


def test_a_new_journal_is_created_at_the_current_schema(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    Journal(path).close()
    assert schema_of(path) == (
        SCHEMA_VERSION, ["delivery_id", "run"], ["deliveries_finished_at", "deliveries_open", "deliveries_outbox"])


V2_IDENTITY = """
CREATE TABLE IF NOT EXISTS identity (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    server TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    token TEXT NOT NULL,
    machine_uuid TEXT NOT NULL DEFAULT '',
    tags TEXT NOT NULL DEFAULT '[]',
    enrolled_at REAL NOT NULL
)"""
"""The identity table of journal schema 2, verbatim (its deliveries table is schema 3's)."""


def test_a_v2_journal_keeps_its_identity_and_deliveries_and_learns_tls_files(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("BEGIN")
    db.execute(V2_IDENTITY)
    db.execute(journal_schema._DELIVERIES.format(name="deliveries"))
    db.execute("PRAGMA user_version=2")
    db.execute("INSERT INTO identity (id, server, agent_id, token, machine_uuid, tags, enrolled_at) "
               "VALUES (1, 'wss://d:1', 'a7', 'tok', 'm-7', '[\"lab\"]', 1.0)")
    db.execute("INSERT INTO deliveries (delivery_id, run, task_id, command, args, priority, state, received_at) "
               "VALUES (1, 2, 10, 'echo', x'80', 1, 'pending', 10.0)")
    db.execute("COMMIT")
    db.close()
    with Journal(path) as journal:
        assert schema_of(path)[0] == SCHEMA_VERSION == 5
        assert journal.alerts() == []  # 3 -> 4: the alert outbox, empty
        assert journal.config() == {}  # 4 -> 5: the defaults
        # Enrolled before TLS files were kept: none, so the system's CA store, as before.
        assert journal.identity() == Identity("wss://d:1", "a7", "tok", "m-7", ("lab",), TLSFiles())
        assert journal.pending() == [(1, 1, 2)]
        files = TLSFiles(ca="/etc/tether/ca.pem", cert="/etc/tether/agent.pem", key="/etc/tether/agent.key")
        journal.set_identity(Identity("wss://d:1", "a7", "tok2", "m-7", ("lab",), files))
    with Journal(path) as journal:
        identity = journal.identity()
        assert identity is not None and identity.tls == files
        assert journal.pending() == [(1, 1, 2)]  # same agent and daemon: its deliveries stay


def test_alerts_wait_in_the_journal_until_tetherd_takes_them(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    with Journal(path) as journal:
        first = journal.add_alert(lambda i: b"alert %d" % i)
        second = journal.add_alert(lambda i: b"alert %d" % i)
        assert first == (1, b"alert 1") and second == (2, b"alert 2")
    with Journal(path) as journal:  # kept across a restart
        assert journal.alerts() == [first, second] and journal.alerts(after=1) == [second]
        assert journal.alerts_taken([1, 99]) == 1
        assert journal.alerts() == [second]
        journal.alerts_taken([2])
        third = journal.add_alert(lambda i: b"alert %d" % i)
        assert third[0] == 3  # never an id a late `alerted` could name


def test_the_alert_outbox_keeps_the_newest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(journal_module, "MAX_ALERTS", 3)
    with Journal(tmp_path / "journal.sqlite") as journal:
        for _ in range(5):
            journal.add_alert(lambda i: b"%d" % i)
        assert [i for i, _ in journal.alerts()] == [3, 4, 5]


def test_the_configuration_applied_is_kept_across_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    with Journal(path) as journal:
        assert journal.config() == {}
        journal.set_config({"state_interval": 60.0, "app.mode": "strict"})
        journal.set_config({"state_interval": 120.0})
    with Journal(path) as journal:
        assert journal.config() == {"state_interval": 120.0}
