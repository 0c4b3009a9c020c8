"""One writer, group commits: the write path of the SQLite store.

Writes are operations (plain functions of a :class:`Tx`) queued to a single writer task.
The writer takes everything queued, runs it in one transaction on aiosqlite's connection
thread (one thread hop per group, not per statement), commits, and only then resolves
each operation's future. Under load a group grows, so the cost of a commit is shared by
many operations ("group commit sized by load"). Each operation runs inside a SAVEPOINT,
so one refused operation never undoes its neighbours. Operations are applied in the
order they were submitted.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import aiosqlite

from ...protocol.errors import ProtocolError
from ...protocol.lifecycle import Decision, DeliveryState, HistoryRow
from . import StoreError, StoreStats

log = logging.getLogger("tether.store")

T = TypeVar("T")


class Tx:
    """What an operation sees: the connection, and a tally of the states it entered.

    Delivery state changes are decided by :mod:`tether.protocol.lifecycle`; a :class:`Tx`
    only applies a :class:`~tether.protocol.lifecycle.Decision` (its state, ``updated_at``,
    its columns and its history entry). States are bound as their plain string values
    (``_value_``: ``.value`` is a descriptor): sqlite3 binds a ``str`` subclass only after
    an adapter lookup that fails, per row."""

    __slots__ = ("_later", "conn", "entered")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.entered: collections.Counter[str] = collections.Counter()
        self._later: dict[tuple[DeliveryState, DeliveryState, tuple[str, ...]], list[tuple[Any, ...]]] = {}

    def execute(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql, tuple(params))

    def one(self, sql: str, params: Iterable[Any] = ()) -> Any:
        return self.conn.execute(sql, tuple(params)).fetchone()

    def born(self, state: DeliveryState, count: int) -> None:
        """Count deliveries inserted in ``state`` (a new task's, a sequel's)."""
        self.entered[state] += count

    def apply(self, delivery_id: int, decision: Decision, now: float) -> None:
        """Write a decision about one delivery now (nothing if it was to ignore the event)."""
        new = decision.new
        if new is None:
            return
        columns = decision.columns
        self.conn.execute(_update_sql(tuple(columns)), (new.value, now, *columns.values(), delivery_id))
        self._record(delivery_id, decision)

    def apply_later(self, delivery_id: int, decision: Decision, now: float) -> None:
        """:meth:`apply`, written by :meth:`flush` with the other decisions of the same shape
        in one ``executemany`` (an agent's report names many deliveries). Only for a delivery
        the operation does not read or decide about again before the flush."""
        new = decision.new
        if new is None:
            return
        columns = decision.columns
        self._later.setdefault((decision.old, new, tuple(columns)), []).append(
            (new._value_, now, *columns.values(), delivery_id, decision.old._value_))
        if decision.history is not None:
            self.history(delivery_id, decision.history)

    def flush(self) -> None:
        for (old, new, names), rows in self._later.items():
            self.conn.executemany(_update_sql(names, guarded=True), rows)
            if new is not old:
                self.entered[new] += len(rows)
        self._later.clear()

    def apply_many(self, decision: Decision, ids: list[int], now: float, where: str = "",
                   params: tuple[Any, ...] = ()) -> list[tuple[int, int]]:
        """Apply one decision (about a delivery in ``decision.old``) to every delivery of
        ``ids`` that is in that state (and matches ``where``): one ``UPDATE`` per chunk of
        ids, no read first. Returns ``(id, task_id)`` of the rows it moved. Right only for
        an event every other state ignores (``test_lifecycle`` checks the ones used)."""
        new = decision.new
        assert new is not None and decision.history is None
        columns = decision.columns
        moved: list[tuple[int, int]] = []
        for chunk in chunks(ids):
            moved += self.conn.execute(
                batch_sql(tuple(columns), len(chunk), where),
                (new.value, now, *columns.values(), *chunk, *params, decision.old.value),
            ).fetchall()
        if decision.moves:
            self.entered[new] += len(moved)
        return moved

    def history(self, delivery_id: int, entry: HistoryRow) -> None:
        """Write the history entry of a run that scheduled another."""
        self.conn.execute(_HISTORY, (delivery_id, entry.run, entry.at, entry.partial, entry.poll_message, entry.note,
                                     entry.next_run_at, entry.next_command, entry.next_args, entry.items_remaining))

    def _record(self, delivery_id: int, decision: Decision) -> None:
        if decision.history is not None:
            self.history(delivery_id, decision.history)
        if decision.moves:
            assert decision.new is not None
            self.entered[decision.new] += 1


_HISTORY = ("INSERT INTO history (delivery_id, run, at, partial, poll_message, note, next_run_at, next_command,"
            " next_args, items_remaining) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
"""A run's history entry (:class:`~tether.protocol.lifecycle.HistoryRow`)."""


@functools.lru_cache(maxsize=256)
def _update_sql(names: tuple[str, ...], *, guarded: bool = False) -> str:
    sets = "".join(f", {k} = ?" for k in names)
    return f"UPDATE deliveries SET state = ?, updated_at = ?{sets} WHERE id = ?" + (" AND state = ?" if guarded else "")


@functools.lru_cache(maxsize=256)
def batch_sql(names: tuple[str, ...], n: int, where: str = "") -> str:
    """One decision applied to ``n`` deliveries by id, those in its old state (and
    ``where``), saying which it moved. The "+" keeps SQLite on the primary key: with the
    state (and an agent) bound, it would otherwise walk the agent's whole queue in
    ``deliveries_pending``."""
    sets = "".join(f", {k} = ?" for k in names)
    return (f"UPDATE deliveries SET state = ?, updated_at = ?{sets} WHERE id IN ({','.join('?' * n)}){where}"
            " AND +state = ? RETURNING id, task_id")


def chunks(ids: list[T], size: int = 500) -> list[list[T]]:
    """Id lists cut to a size SQLite takes as bound parameters, however long a peer's list."""
    return [ids[i : i + size] for i in range(0, len(ids), size)]


Op = Callable[[Tx], Any]


_REFUSALS = (ProtocolError, StoreError, sqlite3.IntegrityError)
"""What an operation may raise to refuse itself. A ``sqlite3.Error`` about the whole
database (:func:`_fails_group`) fails the whole group; any other exception is a bug or
input no check caught (a number too large for SQLite, too many SQL variables): it fails
that operation alone, never its neighbours or the writer."""


def run_group(conn: sqlite3.Connection, ops: list[Op]) -> tuple[list[tuple[bool, Any]], collections.Counter[str]]:
    """Run one group in one transaction (called on the connection's thread).

    Fast path: the operations run back to back. Only if one refuses itself is the group
    rolled back and run again with a SAVEPOINT around each operation, so the refusal
    undoes only that operation's writes. (Operations are functions of the database alone,
    so running them again gives the same outcome.)
    """
    try:
        return _run(conn, ops, isolate=False)
    except _Refused:
        return _run(conn, ops, isolate=True)


class _Refused(Exception):
    pass


SQLITE_BUSY, SQLITE_LOCKED, SQLITE_NOMEM, SQLITE_READONLY = 5, 6, 7, 8
SQLITE_IOERR, SQLITE_CORRUPT, SQLITE_FULL, SQLITE_CANTOPEN, SQLITE_PROTOCOL, SQLITE_NOTADB = 10, 11, 13, 14, 15, 26
WHOLE_DATABASE = frozenset({SQLITE_BUSY, SQLITE_LOCKED, SQLITE_NOMEM, SQLITE_READONLY, SQLITE_IOERR,
                            SQLITE_CORRUPT, SQLITE_FULL, SQLITE_CANTOPEN, SQLITE_PROTOCOL, SQLITE_NOTADB})
"""SQLite's primary result codes that are about the database, not one statement: only
these fail a whole group (https://www.sqlite.org/rescode.html)."""


def _fails_group(exc: Exception) -> bool:
    """A database error (full, locked/busy, I/O, corrupt, read-only), not one operation's
    own: the group fails. Every other error fails only the operation that raised it."""
    return _primary_code(exc) in WHOLE_DATABASE


def _run(
    conn: sqlite3.Connection, ops: list[Op], *, isolate: bool
) -> tuple[list[tuple[bool, Any]], collections.Counter[str]]:
    results: list[tuple[bool, Any]] = []
    entered: collections.Counter[str] = collections.Counter()
    conn.execute("BEGIN IMMEDIATE")
    try:
        for op in ops:
            tx = Tx(conn)
            if not isolate:
                try:
                    results.append((True, op(tx)))
                except Exception as exc:
                    if _fails_group(exc):
                        raise
                    raise _Refused() from None
                entered.update(tx.entered)
                continue
            conn.execute("SAVEPOINT op")
            try:
                value = op(tx)
            except Exception as exc:
                if _fails_group(exc) or not conn.in_transaction:
                    raise  # the database's own trouble, or SQLite ended the transaction itself
                conn.execute("ROLLBACK TO op")
                conn.execute("RELEASE op")
                if not isinstance(exc, _REFUSALS):
                    log.error("event=operation_failed error=%r", exc)
                    exc = StoreError(f"the operation failed: {exc}")
                results.append((False, exc))
            else:
                conn.execute("RELEASE op")
                results.append((True, value))
                entered.update(tx.entered)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return results, entered


def _primary_code(exc: BaseException) -> int:
    """SQLite's primary result code of a ``sqlite3.Error`` (its extended code's low byte); 0 otherwise."""
    return getattr(exc, "sqlite_errorcode", 0) & 0xFF if isinstance(exc, sqlite3.Error) else 0


def is_full(exc: BaseException) -> bool:
    return _primary_code(exc) == SQLITE_FULL


def refusal(exc: BaseException) -> str:
    """What a failed write tells the peer (as 1503): the cause in words, and what to do."""
    code = _primary_code(exc)
    if code == SQLITE_FULL:
        return ("the database is full (the disk, or the max_database_mb cap): new work is refused until there "
                "is room; free disk space, or raise max_database_mb and send tetherd SIGHUP")
    if code in (SQLITE_BUSY, SQLITE_LOCKED):
        return "the database is locked by another process; writes resume when it lets go"
    return f"the database refused the write: {exc}"


def on_connection_thread(conn: aiosqlite.Connection, fn: Callable[..., Any], *args: Any) -> Awaitable[Any]:
    """Run ``fn(*args)`` on the thread aiosqlite keeps for ``conn``.

    aiosqlite gives each connection one thread and runs every call there; its
    ``_execute`` is how a whole function (a whole group of operations) gets there in one
    hop instead of one hop per statement. A test covers it, so an aiosqlite that
    changes it fails the suite rather than production.
    """
    result: Awaitable[Any] = conn._execute(fn, *args)  # type: ignore[no-untyped-call]
    return result


class GroupWriter:
    """The single writer task of one connection; owned by the store that starts it."""

    def __init__(self, conn: aiosqlite.Connection, max_batch: int) -> None:
        self._conn = conn
        self.max_batch = max_batch
        self._queue: collections.deque[tuple[Op, asyncio.Future[Any]]] = collections.deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.entered: collections.Counter[str] = collections.Counter()
        self.commits = 0
        self.commit_seconds = 0.0
        self.commit_ops = 0
        self.last_commit_seconds = 0.0
        self._alone = 0
        """Operations still to run one per transaction (after a group failed on a full disk)."""

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="store-writer")

    async def stop(self) -> None:
        """Commit everything queued, then end the writer task."""
        if self._task is None:
            return
        await self.submit(lambda tx: None)
        self._closing = True
        self._wake.set()
        await self._task
        self._task = None

    def stats(self) -> StoreStats:
        return StoreStats(
            entered=dict(self.entered), commits=self.commits, commit_ops=self.commit_ops,
            commit_seconds=self.commit_seconds, last_commit_seconds=self.last_commit_seconds,
        )

    def submit(self, op: Op) -> asyncio.Future[Any]:
        if self._closing or self._task is None:
            raise StoreError("the store is closed")
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((op, fut))
        self._wake.set()
        return fut

    def submit_quiet(self, op: Op, what: str) -> None:
        """Submit a write nobody awaits; its failure is logged, never lost silently."""
        fut = self.submit(op)
        fut.add_done_callback(lambda f: self._log_failure(f, what))

    @staticmethod
    def _log_failure(fut: asyncio.Future[Any], what: str) -> None:
        if not fut.cancelled() and fut.exception() is not None:
            log.warning("event=write_failed op=%s error=%r", what, fut.exception())

    async def _run(self) -> None:
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            size = 1 if self._alone else min(len(self._queue), self.max_batch)
            self._alone = max(0, self._alone - 1)
            group = [self._queue.popleft() for _ in range(size)]
            started = time.perf_counter()
            try:
                results, entered = await on_connection_thread(
                    self._conn, run_group, self._conn._conn, [op for op, _ in group]
                )
            except Exception as exc:  # the group failed as a whole; the writer lives on
                log.error("event=commit_failed ops=%d error=%r", len(group), exc)
                if is_full(exc) and len(group) > 1:
                    # Full: what fits may still commit (an update in place, a small row), so
                    # each operation is tried alone. A lock is not retried: each try would
                    # wait the busy timeout again.
                    retry = [(op, fut) for op, fut in group if not fut.done()]
                    self._queue.extendleft(reversed(retry))
                    self._alone = len(retry)
                    continue
                error = StoreError(refusal(exc))
                for _, fut in group:
                    if not fut.done():
                        fut.set_exception(error)
                continue
            elapsed = time.perf_counter() - started
            self.commits += 1
            self.commit_ops += len(group)
            self.commit_seconds += elapsed
            self.last_commit_seconds = elapsed
            self.entered.update(entered)
            for (_, fut), (ok, value) in zip(group, results, strict=True):
                if fut.done():
                    continue
                if ok:
                    fut.set_result(value)
                else:
                    fut.set_exception(value if not isinstance(value, sqlite3.Error) else StoreError(str(value)))

