"""What only the SQLite store does, beside the Store contract (``test_store*.py``): its
file, its group commits, its query plans."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from store_data import NOW, created, enrolled, task

from tether.daemon.store import StoreError
from tether.daemon.store.schema import MIGRATIONS
from tether.daemon.store.sqlite import SQLiteStore
from tether.daemon.store.sqlite_runs import ack_sql
from tether.daemon.store.sqlite_tasks import ACTIVE
from tether.daemon.store.writer import Tx
from tether.protocol import ErrorCode


def schema() -> sqlite3.Connection:
    db = sqlite3.connect(":memory:")
    for _, sql in MIGRATIONS:
        db.executescript(sql)
    return db


async def test_secrets_are_stored_only_as_their_digests(sqlite_store: SQLiteStore) -> None:
    token, key = (await sqlite_store.bootstrap(NOW)).result or ("", "")
    await sqlite_store.flush()
    path = sqlite_store.path
    assert path is not None
    raw = path.read_bytes() + (path.with_name("t.sqlite-wal").read_bytes()
                               if path.with_name("t.sqlite-wal").exists() else b"")
    assert token and token.encode() not in raw and key.encode() not in raw


async def test_writes_are_committed_in_groups(sqlite_store: SQLiteStore) -> None:
    a = await enrolled(sqlite_store, "a")
    await asyncio.gather(*[sqlite_store.create_task(task("agent", a), NOW) for _ in range(50)])
    assert sqlite_store.stats().commits < 50 + 5  # grouped, not one commit per operation


async def test_foreign_and_corrupt_files_are_refused_untouched(tmp_path: Path) -> None:
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database at all" * 100)
    before = junk.read_bytes()
    with pytest.raises(StoreError, match="not a SQLite database"):
        await SQLiteStore(junk).open()
    assert junk.read_bytes() == before
    other = tmp_path / "other.sqlite"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE mine (x)")
    conn.commit()
    conn.close()
    before = other.read_bytes()
    with pytest.raises(StoreError, match="not tether's"):
        await SQLiteStore(other).open()
    assert other.read_bytes() == before


async def _submitted(store: SQLiteStore, op: Callable[[Tx], None]) -> None:
    """Submit ``op`` when the task gathering it runs (in the same group as its neighbours)."""
    await store._submit(op)


async def test_a_poisoned_operation_fails_alone_and_its_group_commits(sqlite_store: SQLiteStore) -> None:
    """An operation SQLite refuses for itself ("too many SQL variables", the error once
    caused by unbounded enrollment tags) fails alone: the bystanders in its group commit."""
    a = await enrolled(sqlite_store, "a")

    def poisoned(tx: Tx) -> None:
        tx.execute("INSERT INTO agent_tags (agent_id, tag) VALUES (?, 'x')", (a,))
        tx.execute(f"SELECT 1 WHERE 1 IN ({','.join('?' * 300_000)})", range(300_000))

    outcomes = await asyncio.gather(
        sqlite_store.create_task(task("agent", a), NOW),
        _submitted(sqlite_store, poisoned),
        sqlite_store.create_task(task("agent", a), NOW),
        return_exceptions=True,
    )
    assert isinstance(outcomes[1], StoreError) and "too many SQL variables" in str(outcomes[1])
    made = [o for o in outcomes if not isinstance(o, BaseException)]
    assert len(made) == 2
    assert sorted(i.task_id for i in await sqlite_store.pending_for_agent(a)) == sorted(e.result for e in made)
    assert [v.tags for v in await sqlite_store.list_agents(None)] == [[]]  # the poisoned op's own write is undone


async def test_a_whole_database_error_still_fails_the_group(sqlite_store: SQLiteStore) -> None:
    a = await enrolled(sqlite_store, "a")

    def locked(tx: Tx) -> None:
        error = sqlite3.OperationalError("database is locked")
        error.sqlite_errorcode = 5  # type: ignore[attr-defined]  # SQLITE_BUSY
        raise error

    outcomes = await asyncio.gather(
        sqlite_store.create_task(task("agent", a), NOW), _submitted(sqlite_store, locked), return_exceptions=True)
    assert all(isinstance(o, StoreError) and "locked" in str(o) for o in outcomes)
    assert await sqlite_store.pending_for_agent(a) == []



def test_the_quick_ack_finds_its_rows_by_id_not_by_the_agents_queue() -> None:
    """A regression: with the agent and state bound, SQLite chose deliveries_pending and
    walked the agent's whole queue for every ack (a 20,000-task drain went at 100 % CPU)."""
    db = schema()
    plan = db.execute(f"EXPLAIN QUERY PLAN {ack_sql(32)}", ("acked", 1.0, 1.0, 1.0, *range(32), "a", 1, "queued")).fetchall()
    assert [row[3] for row in plan] == ["SEARCH deliveries USING INTEGER PRIMARY KEY (rowid=?)"]



def test_the_selector_tasks_query_can_use_its_partial_index() -> None:
    """SQLite uses a partial index only if the query's WHERE names its condition as written:
    the active state is spelt ``state = 'active'`` (lifecycle.sql_value), not ``IN (...)``."""
    db = schema()
    sql = f"SELECT id FROM tasks INDEXED BY tasks_selecting WHERE selector IS NOT NULL AND state = {ACTIVE}"
    assert "tasks_selecting" in db.execute(f"EXPLAIN QUERY PLAN {sql}").fetchall()[0][3]
    with pytest.raises(sqlite3.OperationalError, match="no query solution"):  # what IN would have given
        db.execute(f"EXPLAIN QUERY PLAN {sql.replace(f'= {ACTIVE}', f'IN ({ACTIVE})')}")


async def test_a_number_too_large_for_sqlite_neither_kills_the_writer_nor_its_group(sqlite_store: SQLiteStore) -> None:
    store = sqlite_store
    a = await enrolled(store, "a")
    _, (item,) = await created(store.create_task(task("agent", a), NOW))
    huge = await store.acknowledge(a, [(2**63, 1), (item.delivery_id, 1)], NOW)
    assert [(r.delivery_id, r.code) for r in huge.refused] == [(2**63, ErrorCode.UNKNOWN_DELIVERY)]
    assert huge.settled == [(item.delivery_id, 1)]

    def broken(tx: Any) -> None:
        raise OverflowError("Python int too large to convert to SQLite INTEGER")

    outcomes = await asyncio.gather(store._submit(broken), store.create_task(task("agent", a), NOW),
                                    return_exceptions=True)
    assert "the operation failed" in str(outcomes[0])
    assert not isinstance(outcomes[1], BaseException)  # its neighbour in the group committed
    await store.flush()  # and the writer still answers
