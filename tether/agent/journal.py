"""The agent's journal: what this agent promised the daemon, kept on local disk.

One SQLite file (``journal.sqlite`` in the state directory), stdlib ``sqlite3``. Promises,
each of which holds if the process is killed with SIGKILL at any moment:

* A delivery is committed here *before* it is acknowledged, so an ``ack`` never names a
  delivery the agent could forget (DESIGN "The task model": at-least-once delivery, the
  journal deduplicates).
* A run of a delivery is remembered for :data:`DEDUP_RETENTION` seconds after its result
  was confirmed, so a re-pushed run never runs twice.
* A result is committed to the *outbox* before it is sent, and stays there until the daemon
  answers ``committed`` (or refuses it for good).
* A delivery found ``running`` when the journal is recovered is never run again -- we cannot
  know whether it had effects -- it becomes a failed result in the outbox.
* A cancelled delivery never runs again, whichever run the daemon pushes later.

Runs (``tether.protocol.frames``): a polling command's delivery runs several times, run 1,
then 2, 3 ... after each run's schedule result; every run is its own row, keyed by
``(delivery_id, run)``, and every method about one run takes or returns that pair. The
daemon pushes run N+1 only after it committed run N's result, so at most one run of a
delivery is pending or running, and a ``task`` for run N confirms the results of the
earlier runs if their ``committed`` was lost -- so a delivery also has at most one result
in the outbox, and a refusal that names only the delivery is about that one.

The file format and the migration of older agents' files: :mod:`tether.agent.journal_schema`.

WAL with ``synchronous=NORMAL``: a commit survives the process dying (the WAL write is in
the OS page cache); only an OS crash or power loss may take back the last commits.

The file holds the agent's secret token, so it is created with mode 0600 and the state
directory with 0700.

All methods are synchronous and fast (no fsync per commit in WAL/NORMAL); the client calls
them from the event loop. One ``Journal`` per agent; it is not shared between threads.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tether.protocol import MSGPACK, Result, Task
from tether.protocol.lifecycle import OPEN_RUNS, RUN, RunEvent, RunState, moves, sql_in, sql_value

from .journal_schema import SCHEMA_VERSION, migrate
from .tls import TLSFiles

JOURNAL_FILE = "journal.sqlite"
DAY = 86_400
DEDUP_RETENTION = 8 * DAY
"""How long a confirmed run of a delivery is kept for deduplication: a task's default ttl (one
week, LimaCharlie "Reliable tasking") plus a day of margin. The daemon does not re-push a
delivery whose result it committed, so this bounds only pathological re-sends."""

MAX_ALERTS = 10_000
"""Alerts the journal keeps while tetherd has not taken them (the oldest go first)."""

RESTARTED_WHILE_RUNNING = "agent restarted while the command was running"

PENDING, RUNNING, CANCELLED = RunState.PENDING, RunState.RUNNING, RunState.CANCELLED
"""A run is journaled ``pending``; its states and what moves them: :data:`~tether.protocol.lifecycle.RUN`.
(Bound to SQL as their ``.value``: sqlite3 binds a ``str`` subclass only after a failed
adapter lookup, on every task.)"""


def _move(event: RunEvent) -> tuple[str, str]:
    """What ``event`` moves, as SQL (``state IN (...)``), and the state it moves them to."""
    olds, new = moves(RUN, event)
    return sql_in(olds), new.value


_CLAIM, _FINISH, _RECOVER, _CANCEL = (_move(e) for e in (RunEvent.CLAIM, RunEvent.FINISH, RunEvent.RECOVER,
                                                        RunEvent.CANCEL))
_FINISH_SQL = f"UPDATE deliveries SET state = ?, result = ?, finished_at = ? WHERE delivery_id = ? AND run = ?" \
    f" AND state IN {_FINISH[0]}"
_OPEN = sql_in(OPEN_RUNS)
"""As the ``deliveries_open`` index is declared (``journal_schema``): SQLite uses it only then."""

Ref = tuple[int, int]
"""``(delivery_id, run)``: one run of a delivery (``tether.protocol.run_refs``)."""

Fresh = dict[Ref, tuple[int, str, bytes, int]]
"""``(task_id, command, args, priority)`` of runs journaled ``pending`` in the current
transaction, by ``(delivery_id, run)``: :meth:`Journal.claim_many` need not read them back."""

TOMBSTONE_RUN = 0
"""The run of the row a ``cancel`` leaves when it finds nothing to cancel: it matches no
run the daemon pushes, and makes :meth:`Journal.accept` ignore every run of the delivery."""

MAX_TOMBSTONES = 10_000
"""Tombstones kept; past a tenth more, the oldest are forgotten (a daemon that cancels
deliveries the agent never had, again and again, cannot grow the journal without end)."""


@dataclass(frozen=True, slots=True)
class Identity:
    """Who this agent is to which daemon. ``token`` is secret: it is left out of ``repr``."""

    server: str
    agent_id: str
    token: str = field(repr=False)
    machine_uuid: str = ""
    tags: tuple[str, ...] = ()
    tls: TLSFiles = field(default_factory=TLSFiles)
    """The CA and client certificate given at enrollment, for a wss:// daemon."""


@dataclass(frozen=True, slots=True)
class Accepted:
    """What :meth:`Journal.accept` decided for a burst of ``task`` frames."""

    ack: list[Ref]
    """Every ``(delivery_id, run)`` to acknowledge: new runs and runs already held."""
    new: list[tuple[int, int, int]]
    """``(priority, delivery_id, run)`` of runs seen for the first time: run them."""
    resend: list[bytes]
    """Outbox results of re-pushed runs that already finished: send them again."""
    duplicates: int = 0
    """Tasks that were not new: already journaled, stale, or of a cancelled delivery."""
    fresh: Fresh = field(default_factory=dict)
    """What was journaled of each new run: claim them in the same transaction with it."""


@dataclass(frozen=True, slots=True)
class Claimed:
    """A run that just moved ``pending -> running``: everything needed to run it."""

    delivery_id: int
    task_id: int
    command: str
    args: bytes
    priority: int
    run: int
    started_at: float


class Journal:
    """The local store of identity, deliveries and the result outbox (see module doc).

    ``path`` may be ``":memory:"`` for simulated agents that need no durability.
    """

    def __init__(self, path: str | os.PathLike[str], *, clock: Callable[[], float] = time.time) -> None:
        self.path = str(path)
        self._clock = clock
        self._tombstones: int | None = None
        """How many tombstones the journal holds, once counted (:meth:`_bound_tombstones`)."""
        if self.path != ":memory:":
            _create_private(Path(self.path))
        self._db = sqlite3.connect(self.path, isolation_level=None)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.execute("PRAGMA cache_size=-512")  # 512 KiB: the journal is small
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise RuntimeError(
                    f"{self.path} was written by a newer tether-agent (journal schema {version}, "
                    f"this one knows {SCHEMA_VERSION}); upgrade tether-agent"
                )
            if version < SCHEMA_VERSION:
                with self._tx() as db:
                    migrate(db, version)
                    db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except BaseException:
            self._db.close()
            raise

    @classmethod
    def in_state_dir(cls, state_dir: str | os.PathLike[str], *, clock: Callable[[], float] = time.time) -> Journal:
        """The journal of the agent whose state directory is ``state_dir``."""
        return cls(Path(state_dir) / JOURNAL_FILE, clock=clock)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def transaction(self, *, statements: int = 2) -> _Transaction:
        """Group the writes of several methods into one transaction (one commit).

        Each method's promise then holds from the end of this block: say nothing to the
        daemon about any of them before it exits. If one raises, all are rolled back.
        ``statements=1``: the block writes one statement, atomic by itself: no transaction
        is opened around it.
        """
        return self._tx(statements=statements)

    def _tx(self, *, statements: int = 2) -> _Transaction:
        """One write transaction; ``BEGIN IMMEDIATE`` so it never fails half-way on a lock.
        Inside :meth:`transaction`, it is part of that one. ``statements=1``: none (see
        :class:`_Transaction`)."""
        return _Transaction(self._db, statements=statements)

    # -- identity ----------------------------------------------------------------------

    def identity(self) -> Identity | None:
        row = self._db.execute(
            "SELECT server, agent_id, token, machine_uuid, tags, ca_file, cert_file, key_file "
            "FROM identity WHERE id = 1"
        ).fetchone()
        if row is None:
            return None
        tls = TLSFiles(row[5], row[6], row[7])
        return Identity(row[0], row[1], row[2], row[3], tuple(json.loads(row[4])), tls)

    def set_identity(self, identity: Identity) -> int:
        """Store the identity from enrollment. If it names another agent, the old deliveries
        and results are dropped (no daemon would accept them) and their number is returned;
        the same agent (a proved re-enrollment, perhaps at another URL) keeps them."""
        with self._tx() as db:
            old = db.execute("SELECT agent_id FROM identity WHERE id = 1").fetchone()
            dropped = 0
            if old is not None and old[0] != identity.agent_id:
                dropped = db.execute("DELETE FROM deliveries").rowcount
            db.execute(
                "INSERT OR REPLACE INTO identity (id, server, agent_id, token, machine_uuid, tags, enrolled_at, "
                "ca_file, cert_file, key_file) VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (identity.server, identity.agent_id, identity.token, identity.machine_uuid,
                 json.dumps(list(identity.tags)), self._clock(),
                 identity.tls.ca, identity.tls.cert, identity.tls.key),
            )
        return dropped

    def set_server(self, server: str) -> bool:
        """The daemon is reached at another URL from now on (the same daemon: the identity,
        deliveries and results stay). False if the journal holds no identity."""
        with self._tx(statements=1) as db:
            return bool(db.execute("UPDATE identity SET server = ? WHERE id = 1", (server,)).rowcount)

    def adopt_agent_id(self, agent_id: str) -> None:
        """The daemon merged this agent into ``agent_id`` (``tetherctl agent merge``): this
        agent is that one from now on, with the same token; its journal stays."""
        with self._tx(statements=1) as db:
            db.execute("UPDATE identity SET agent_id = ? WHERE id = 1", (agent_id,))

    # -- configuration -----------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        """The configuration last applied (what differs from the defaults; ``{}``: none),
        so a restarted agent runs with it before its session opens (and is not drifted)."""
        row = self._db.execute("SELECT settings FROM config WHERE id = 1").fetchone()
        return {} if row is None else dict(json.loads(row[0]))

    def set_config(self, settings: dict[str, Any]) -> None:
        with self._tx(statements=1) as db:
            db.execute("INSERT OR REPLACE INTO config (id, settings) VALUES (1, ?)", (json.dumps(settings),))

    # -- deliveries --------------------------------------------------------------------

    def accept(self, tasks: Iterable[Task]) -> Accepted:
        """Journal a burst of pushed runs in one transaction, deduplicated by (delivery, run).

        A run already journaled is acknowledged again (and its result re-sent if it waits
        in the outbox) but never run twice. Ignored, not even acknowledged, because the
        daemon already knows how they ended: a run whose result was confirmed, a run older
        than one journaled for the same delivery, and every run of a cancelled delivery.
        A new run N confirms the unconfirmed results of the delivery's earlier runs (the
        daemon pushes run N only after committing run N-1).
        """
        batch: dict[Ref, Task] = {}
        for task in tasks:
            batch.setdefault((task.delivery_id, task.run), task)
        if not batch:
            return Accepted([], [], [])
        now = self._clock()
        ack: list[Ref] = []
        resend: list[bytes] = []
        new: list[Task] = []
        with self._tx() as db:
            ids = sorted({delivery_id for delivery_id, _ in batch})
            known: dict[int, dict[int, tuple[str, bytes | None]]] = {}
            for delivery_id, run, state, result in db.execute(
                f"SELECT delivery_id, run, state, result FROM deliveries WHERE delivery_id IN ({','.join('?' * len(ids))})",
                ids,
            ):
                known.setdefault(delivery_id, {})[run] = (state, result)
            for (delivery_id, run), task in batch.items():
                runs = known.setdefault(delivery_id, {})
                if any(state == CANCELLED for state, _ in runs.values()):
                    continue  # a cancel applies to every run of the delivery
                if run in runs:
                    state, result = runs[run]
                    if state in OPEN_RUNS:
                        ack.append((delivery_id, run))
                    elif result is not None:  # finished, result not yet confirmed
                        ack.append((delivery_id, run))
                        resend.append(result)
                    continue  # finished and confirmed: the daemon already knows
                if runs and max(runs) > run:
                    continue  # stale: a later run of this delivery is already here
                runs[run] = (PENDING, None)
                ack.append((delivery_id, run))
                new.append(task)
            fresh: Fresh = {(t.delivery_id, t.run): (t.task_id, t.command, bytes(t.args), t.priority) for t in new}
            _each(db, "INSERT INTO deliveries (delivery_id, run, task_id, command, args, priority, state, received_at) "
                      "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", [(*ref, *row, PENDING.value, now) for ref, row in fresh.items()])
            later = [(t.delivery_id, t.run) for t in new if t.run > 1]
            if later:
                db.executemany(
                    "UPDATE deliveries SET result = NULL, confirmed = 1 "
                    "WHERE delivery_id = ? AND run < ? AND result IS NOT NULL",
                    later,
                )
        return Accepted(
            ack=ack, new=[(t.priority, t.delivery_id, t.run) for t in new], resend=resend,
            duplicates=len(batch) - len(new), fresh=fresh,
        )

    def claim(self, delivery_id: int, run: int) -> Claimed | None:
        """``pending -> running``; ``None`` if it is not pending (cancelled, or taken)."""
        return self.claim_many([(delivery_id, run)])[0]

    def claim_many(self, refs: Sequence[Ref], *, fresh: Fresh | None = None) -> list[Claimed | None]:
        """:meth:`claim` of each run, in one transaction; ``None`` for those not pending.

        ``fresh``: runs that :meth:`accept` journaled earlier in the *same* transaction
        (its ``Accepted.fresh``): they are pending, and are not read back. Outside that
        transaction, it would not be known that they still are."""
        if not refs:
            return []
        now = self._clock()
        rows: dict[Ref, tuple[int, str, bytes, int]] = {}
        if fresh:
            if not self._db.in_transaction:
                raise RuntimeError("claim_many(fresh=...) belongs in the transaction that accepted them")
            rows.update((ref, fresh[ref]) for ref in refs if ref in fresh)
        # No UPDATE ... RETURNING (SQLite < 3.35) nor row values (< 3.15): endpoints run old
        # distributions. At most one run of a delivery is pending, so the id finds it.
        with self._tx() as db:
            unread = sorted({delivery_id for delivery_id, run in refs if (delivery_id, run) not in rows})
            for chunk in _chunks(unread):
                for delivery_id, run, task_id, command, args, priority in db.execute(
                    "SELECT delivery_id, run, task_id, command, args, priority FROM deliveries "
                    f"WHERE state IN {_CLAIM[0]} AND delivery_id IN ({','.join('?' * len(chunk))})",
                    chunk,
                ):
                    rows[delivery_id, run] = (task_id, command, args, priority)
            taken = [ref for ref in dict.fromkeys(refs) if ref in rows]
            _each(db, "UPDATE deliveries SET state = ?, started_at = ? WHERE delivery_id = ? AND run = ?",
                  [(_CLAIM[1], now, delivery_id, run) for delivery_id, run in taken])
        claimed: dict[Ref, Claimed] = {}
        for ref in taken:
            task_id, command, args, priority = rows[ref]
            claimed[ref] = Claimed(ref[0], task_id, command, args, priority, ref[1], now)
        return [claimed.pop(ref, None) for ref in refs]  # a ref named twice is claimed once

    def finish(self, delivery_id: int, run: int, result: bytes) -> bool:
        """``running -> finished`` with ``result`` (an encoded ``Result`` frame) in the
        outbox. ``False`` if the run is no longer running (cancelled meanwhile)."""
        return self.finish_many([(delivery_id, run, result)])[0]

    def finish_many(self, results: Sequence[tuple[int, int, bytes]]) -> list[bool]:
        """:meth:`finish` of each ``(delivery_id, run, result)``, in one transaction."""
        if not results:
            return []
        now = self._clock()
        # One UPDATE per run, no read first: it changes a row only if the run is still
        # running, so a run named twice is finished once. One alone needs no transaction.
        sql, finished = _FINISH_SQL, _FINISH[1]
        with self._tx(statements=len(results)) as db:
            return [
                db.execute(sql, (finished, result, now, delivery_id, run)).rowcount == 1
                for delivery_id, run, result in results
            ]

    def cancel(self, delivery_id: int) -> RunState | None:
        """Cancel every run of a delivery: the pending or running one is marked cancelled,
        and no later run will run. Returns the state before of the run affected: the
        pending or running one, else the latest run (``None``: the delivery is unknown).

        Finished runs are left alone (their result is the authority, and stays in the
        outbox until committed). If no run was pending, running or already cancelled, a
        tombstone row (run :data:`TOMBSTONE_RUN`) remembers the cancel, so the delivery
        never runs if a ``task`` frame for it, of any run, comes later.
        """
        now = self._clock()
        with self._tx() as db:
            states = [RunState(state) for (state,) in db.execute(
                "SELECT state FROM deliveries WHERE delivery_id = ? ORDER BY run", (delivery_id,))]
            if RUNNING in states or PENDING in states:
                db.execute(
                    "UPDATE deliveries SET state = ?, finished_at = ? "
                    f"WHERE delivery_id = ? AND state IN {_CANCEL[0]}",
                    (_CANCEL[1], now, delivery_id),
                )
                return RUNNING if RUNNING in states else PENDING
            if CANCELLED in states:
                return CANCELLED
            db.execute(
                "INSERT INTO deliveries (delivery_id, run, task_id, command, args, priority, state, "
                "received_at, finished_at) VALUES (?, ?, 0, '', x'80', 0, ?, ?, ?)",
                (delivery_id, TOMBSTONE_RUN, CANCELLED.value, now, now),
            )
            self._bound_tombstones(db)
        return states[-1] if states else None

    def _bound_tombstones(self, db: sqlite3.Connection) -> None:
        """One more tombstone was written: past :data:`MAX_TOMBSTONES` and a tenth, forget
        the oldest down to it (counted once per journal, then kept up to date)."""
        if self._tombstones is None:
            self._tombstones = db.execute(
                "SELECT count(*) FROM deliveries WHERE run = ?", (TOMBSTONE_RUN,)).fetchone()[0]
        else:
            self._tombstones += 1
        if self._tombstones > MAX_TOMBSTONES + MAX_TOMBSTONES // 10:
            self._tombstones -= db.execute(
                "DELETE FROM deliveries WHERE run = ? AND delivery_id IN (SELECT delivery_id FROM deliveries "
                "WHERE run = ? ORDER BY finished_at, delivery_id LIMIT ?)",
                (TOMBSTONE_RUN, TOMBSTONE_RUN, self._tombstones - MAX_TOMBSTONES),
            ).rowcount

    def state(self, delivery_id: int, run: int | None = None) -> RunState | None:
        """The state of one run; without ``run``, of the delivery: ``cancelled`` if it was
        cancelled, else its latest run's. ``None`` if unknown."""
        if run is not None:
            row = self._db.execute(
                "SELECT state FROM deliveries WHERE delivery_id = ? AND run = ?", (delivery_id, run)
            ).fetchone()
            return None if row is None else RunState(row[0])
        states = [RunState(r[0]) for r in self._db.execute(
            "SELECT state FROM deliveries WHERE delivery_id = ? ORDER BY run", (delivery_id,)
        )]
        if not states:
            return None
        return CANCELLED if CANCELLED in states else states[-1]

    # -- outbox ------------------------------------------------------------------------

    def outbox(self) -> list[bytes]:
        """Results not yet confirmed, oldest delivery and run first, as encoded ``Result``
        frames (each names its run)."""
        rows = self._db.execute(
            "SELECT result FROM deliveries WHERE result IS NOT NULL ORDER BY delivery_id, run"
        ).fetchall()
        return [r[0] for r in rows]

    def confirm(self, refs: Iterable[Ref]) -> int:
        """The daemon committed these ``(delivery_id, run)`` results: drop them from the
        outbox (the rows stay, for deduplication). Returns how many were dropped."""
        rows = [(d, r) for d, r in refs]
        with self._tx(statements=len(rows)) as db:
            return _each(db, "UPDATE deliveries SET result = NULL, confirmed = 1 "
                             "WHERE delivery_id = ? AND run = ? AND result IS NOT NULL", rows)

    def refuse(self, delivery_id: int) -> int:
        """The daemon refused this delivery's result for good: drop every unconfirmed result
        of the delivery, whatever its run (a refusal names only the delivery; there is at
        most one such result, see the module doc). Returns how many were dropped."""
        with self._tx(statements=1) as db:
            return db.execute(
                "UPDATE deliveries SET result = NULL, confirmed = 1 WHERE delivery_id = ? AND result IS NOT NULL",
                (delivery_id,),
            ).rowcount

    # -- alerts ------------------------------------------------------------------------

    def add_alert(self, encode: Callable[[int], bytes]) -> tuple[int, bytes]:
        """Keep an alert until tetherd takes it: ``encode`` makes its frame from the id the
        journal gives it. At most :data:`MAX_ALERTS` wait; past that the oldest is dropped
        (an agent offline for long keeps its newest alerts)."""
        with self._tx() as db:
            alert_id = db.execute("INSERT INTO alerts (frame) VALUES (x'')").lastrowid
            assert alert_id is not None
            frame = encode(alert_id)
            db.execute("UPDATE alerts SET frame = ? WHERE id = ?", (frame, alert_id))
            db.execute("DELETE FROM alerts WHERE id <= ?", (alert_id - MAX_ALERTS,))
        return alert_id, frame

    def alerts(self, after: int = 0) -> list[tuple[int, bytes]]:
        """The alerts tetherd has not taken yet (those numbered above ``after``), oldest
        first: ``(id, encoded Alert frame)``."""
        rows = self._db.execute("SELECT id, frame FROM alerts WHERE id > ? ORDER BY id", (after,)).fetchall()
        return [(r[0], r[1]) for r in rows]

    def alerts_taken(self, ids: Sequence[int]) -> int:
        """tetherd took these alerts (stored, counted, or refused for good): forget them."""
        with self._tx(statements=len(ids)) as db:
            return _each(db, "DELETE FROM alerts WHERE id = ?", [(i,) for i in ids])

    # -- views -------------------------------------------------------------------------

    def holding(self) -> list[Ref]:
        """``(delivery_id, run)`` for ``hello.holding``: journaled, running, or result
        unconfirmed."""
        rows = self._db.execute(
            f"SELECT delivery_id, run FROM deliveries WHERE state IN {_OPEN} "
            "UNION SELECT delivery_id, run FROM deliveries WHERE result IS NOT NULL ORDER BY 1, 2"
        ).fetchall()
        return [(r[0], r[1]) for r in rows]

    def pending(self) -> list[tuple[int, int, int]]:
        """``(priority, delivery_id, run)`` of every run journaled but not started."""
        rows = self._db.execute(
            f"SELECT priority, delivery_id, run FROM deliveries WHERE state = {sql_value(PENDING)}"
            " ORDER BY delivery_id, run"
        ).fetchall()
        return [(r[0], r[1], r[2]) for r in rows]

    def counts(self) -> dict[str, int]:
        """``pending``, ``running``, ``outbox`` (unconfirmed results), ``finished`` (all
        finished runs still kept, confirmed or not) and ``cancelled`` (rows: cancelled
        runs and tombstones)."""
        counts = {PENDING.value: 0, RUNNING.value: 0, "outbox": 0, RunState.FINISHED.value: 0, CANCELLED.value: 0}
        for state, n in self._db.execute("SELECT state, count(*) FROM deliveries GROUP BY state"):
            counts[state] = n
        counts["outbox"] = self._db.execute("SELECT count(*) FROM deliveries WHERE result IS NOT NULL").fetchone()[0]
        return counts

    # -- maintenance -------------------------------------------------------------------

    def recover(self) -> list[Ref]:
        """After a restart: every run still ``running`` becomes a failed result of that run
        in the outbox (never run again). Returns their ``(delivery_id, run)``. Call once,
        before running anything."""
        now = self._clock()
        with self._tx() as db:
            rows = db.execute(
                f"SELECT delivery_id, run, started_at FROM deliveries WHERE state IN {_RECOVER[0]}"
                " ORDER BY delivery_id, run"
            ).fetchall()
            for delivery_id, run, started_at in rows:
                result = Result(
                    delivery_id=delivery_id, run=run, ok=False, error=RESTARTED_WHILE_RUNNING,
                    started_at=started_at or 0.0, finished_at=now,
                )
                db.execute(
                    "UPDATE deliveries SET state = ?, result = ?, finished_at = ? WHERE delivery_id = ? AND run = ?",
                    (_RECOVER[1], MSGPACK.encode(result), now, delivery_id, run),
                )
        return [(r[0], r[1]) for r in rows]

    def prune(self, retention: float = DEDUP_RETENTION) -> int:
        """Forget confirmed and cancelled runs that ended more than ``retention`` ago."""
        cutoff = self._clock() - retention
        self._tombstones = None  # counted again when next needed
        with self._tx() as db:
            return db.execute(
                "DELETE FROM deliveries WHERE finished_at < ? AND (confirmed = 1 OR state = ?)",
                (cutoff, CANCELLED.value),
            ).rowcount


class _Transaction:
    """``with``: one ``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` if the block raises), or
    nothing if a transaction is already open (the block is part of it). With
    ``statements=1`` it opens none either: one statement is atomic by itself (SQLite's
    autocommit), and skipping the ``BEGIN`` and the ``COMMIT`` takes a third off a lone
    finish or confirm. A class rather than ``@contextmanager``: the journal opens one per
    step of every task, and a generator costs a few microseconds more each time."""

    __slots__ = ("_db", "_open")

    def __init__(self, db: sqlite3.Connection, *, statements: int = 2) -> None:
        self._db = db
        self._open = statements > 1 and not db.in_transaction

    def __enter__(self) -> sqlite3.Connection:
        if self._open:
            self._db.execute("BEGIN IMMEDIATE")
        return self._db

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if self._open:
            self._db.execute("COMMIT" if exc_type is None else "ROLLBACK")


def _each(db: sqlite3.Connection, sql: str, rows: Sequence[tuple[object, ...]]) -> int:
    """``executemany``, or ``execute`` for one row (the usual case: a task a burst, a
    result a ``committed``), which costs less; how many rows changed."""
    if len(rows) == 1:
        return db.execute(sql, rows[0]).rowcount
    return db.executemany(sql, rows).rowcount if rows else 0


_MAX_VARIABLES = 500
"""Ids per ``IN (...)``: old SQLite builds allow 999 parameters in a statement."""


def _chunks(ids: list[int]) -> Iterator[list[int]]:
    for start in range(0, len(ids), _MAX_VARIABLES):
        yield ids[start:start + _MAX_VARIABLES]


def _create_private(path: Path) -> None:
    """Create the journal file (and its directory) readable by the owner only."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if p.exists():
            os.chmod(p, 0o600)
