"""The agent's journal: what this agent promised the daemon, kept on local disk.

One SQLite file (``journal.sqlite`` in the state directory), stdlib ``sqlite3``. Promises,
each of which holds if the process is killed with SIGKILL at any moment:

* A delivery is committed here *before* it is acknowledged, so an ``ack`` never names a
  delivery the agent could forget (DESIGN "The task model": at-least-once delivery, the
  journal deduplicates).
* A delivery id is remembered for :data:`DEDUP_RETENTION` seconds after its result was
  confirmed, so a re-pushed delivery never runs twice.
* A result is committed to the *outbox* before it is sent, and stays there until the daemon
  answers ``committed`` (or refuses it for good).
* A delivery found ``running`` when the journal is recovered is never run again -- we cannot
  know whether it had effects -- it becomes a failed result in the outbox.

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
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from tether.protocol import MSGPACK, Result, Task

JOURNAL_FILE = "journal.sqlite"
DAY = 86_400
DEDUP_RETENTION = 8 * DAY
"""How long a confirmed delivery id is kept for deduplication: a task's default ttl (one
week, LimaCharlie "Reliable tasking") plus a day of margin. The daemon does not re-push a
delivery whose result it committed, so this bounds only pathological re-sends."""

RESTARTED_WHILE_RUNNING = "agent restarted while the command was running"

DeliveryState = Literal["pending", "running", "finished", "cancelled"]

SCHEMA_VERSION = 1
_SCHEMA = """
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


@dataclass(frozen=True, slots=True)
class Identity:
    """Who this agent is to which daemon. ``token`` is secret: it is left out of ``repr``."""

    server: str
    agent_id: str
    token: str = field(repr=False)
    machine_uuid: str = ""
    tags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Accepted:
    """What :meth:`Journal.accept` decided for a burst of ``task`` frames."""

    ack: list[int]
    """Every delivery id to acknowledge: new ones and ones already held."""
    new: list[tuple[int, int]]
    """``(priority, delivery_id)`` of deliveries seen for the first time: run them."""
    resend: list[bytes]
    """Outbox results of re-pushed deliveries that already finished: send them again."""
    duplicates: int = 0


@dataclass(frozen=True, slots=True)
class Claimed:
    """A delivery that just moved ``pending -> running``: everything needed to run it."""

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
                with self._tx():
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            self._db.execute(statement)
                    self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
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

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; ``BEGIN IMMEDIATE`` so it never fails half-way on a lock."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # -- identity ----------------------------------------------------------------------

    def identity(self) -> Identity | None:
        row = self._db.execute(
            "SELECT server, agent_id, token, machine_uuid, tags FROM identity WHERE id = 1"
        ).fetchone()
        if row is None:
            return None
        return Identity(row[0], row[1], row[2], row[3], tuple(json.loads(row[4])))

    def set_identity(self, identity: Identity) -> int:
        """Store the identity from enrollment. If it names another agent or daemon, the old
        deliveries and results are dropped (no daemon would accept them) and their number
        is returned."""
        with self._tx() as db:
            old = db.execute("SELECT server, agent_id FROM identity WHERE id = 1").fetchone()
            dropped = 0
            if old is not None and tuple(old) != (identity.server, identity.agent_id):
                dropped = db.execute("DELETE FROM deliveries").rowcount
            db.execute(
                "INSERT OR REPLACE INTO identity (id, server, agent_id, token, machine_uuid, tags, enrolled_at) "
                "VALUES (1, ?, ?, ?, ?, ?, ?)",
                (identity.server, identity.agent_id, identity.token, identity.machine_uuid,
                 json.dumps(list(identity.tags)), self._clock()),
            )
        return dropped

    # -- deliveries --------------------------------------------------------------------

    def accept(self, tasks: Iterable[Task]) -> Accepted:
        """Journal a burst of pushed deliveries in one transaction (dedup by delivery id)."""
        batch: dict[int, Task] = {}
        for task in tasks:
            batch.setdefault(task.delivery_id, task)
        if not batch:
            return Accepted([], [], [])
        now = self._clock()
        ack: list[int] = []
        resend: list[bytes] = []
        with self._tx() as db:
            marks = ",".join("?" * len(batch))
            known = db.execute(
                f"SELECT delivery_id, state, result FROM deliveries WHERE delivery_id IN ({marks})",
                tuple(batch),
            ).fetchall()
            for delivery_id, state, result in known:
                del batch[delivery_id]
                if state in ("pending", "running"):
                    ack.append(delivery_id)
                elif result is not None:  # finished, result not yet confirmed
                    ack.append(delivery_id)
                    resend.append(result)
                # cancelled, or finished and confirmed: the daemon already knows; no ack
            db.executemany(
                "INSERT INTO deliveries (delivery_id, task_id, command, args, priority, run, state, received_at) "
                "VALUES (?, ?, ?, ?, ?, ?, 'pending', ?)",
                [(t.delivery_id, t.task_id, t.command, bytes(t.args), t.priority, t.run, now) for t in batch.values()],
            )
        ack.extend(batch)
        new = [(t.priority, t.delivery_id) for t in batch.values()]
        return Accepted(ack=ack, new=new, resend=resend, duplicates=len(known))

    def claim(self, delivery_id: int) -> Claimed | None:
        """``pending -> running``; ``None`` if it is not pending (cancelled, or taken)."""
        now = self._clock()
        # No UPDATE ... RETURNING: endpoints run old distributions (SQLite < 3.35).
        with self._tx() as db:
            row = db.execute(
                "SELECT task_id, command, args, priority, run FROM deliveries "
                "WHERE delivery_id = ? AND state = 'pending'",
                (delivery_id,),
            ).fetchone()
            if row is None:
                return None
            db.execute(
                "UPDATE deliveries SET state = 'running', started_at = ? WHERE delivery_id = ?",
                (now, delivery_id),
            )
        return Claimed(delivery_id, row[0], row[1], row[2], row[3], row[4], now)

    def finish(self, delivery_id: int, result: bytes) -> bool:
        """``running -> finished`` with ``result`` (an encoded ``Result`` frame) in the
        outbox. ``False`` if the delivery is no longer running (cancelled meanwhile)."""
        with self._tx() as db:
            changed = db.execute(
                "UPDATE deliveries SET state = 'finished', result = ?, finished_at = ? "
                "WHERE delivery_id = ? AND state = 'running'",
                (result, self._clock(), delivery_id),
            ).rowcount
        return changed == 1

    def cancel(self, delivery_id: int) -> DeliveryState | None:
        """Mark a pending or running delivery cancelled; return its state before.

        Finished deliveries are left alone (their result is the authority). An unknown id
        leaves a tombstone, so the delivery never runs if its ``task`` frame comes later.
        """
        now = self._clock()
        with self._tx() as db:
            row = db.execute("SELECT state FROM deliveries WHERE delivery_id = ?", (delivery_id,)).fetchone()
            if row is None:
                db.execute(
                    "INSERT INTO deliveries (delivery_id, task_id, command, args, priority, state, "
                    "received_at, finished_at) VALUES (?, 0, '', x'80', 0, 'cancelled', ?, ?)",
                    (delivery_id, now, now),
                )
                return None
            state: DeliveryState = row[0]
            if state in ("pending", "running"):
                db.execute(
                    "UPDATE deliveries SET state = 'cancelled', finished_at = ? WHERE delivery_id = ?",
                    (now, delivery_id),
                )
        return state

    def state(self, delivery_id: int) -> DeliveryState | None:
        row = self._db.execute("SELECT state FROM deliveries WHERE delivery_id = ?", (delivery_id,)).fetchone()
        return None if row is None else row[0]

    # -- outbox ------------------------------------------------------------------------

    def outbox(self) -> list[bytes]:
        """Results not yet confirmed, oldest delivery first, as encoded ``Result`` frames."""
        rows = self._db.execute(
            "SELECT result FROM deliveries WHERE result IS NOT NULL ORDER BY delivery_id"
        ).fetchall()
        return [r[0] for r in rows]

    def confirm(self, delivery_ids: Iterable[int]) -> int:
        """The daemon committed these results: drop them from the outbox (the ids stay)."""
        ids = [(i,) for i in delivery_ids]
        with self._tx() as db:
            cursor = db.executemany(
                "UPDATE deliveries SET result = NULL, confirmed = 1 WHERE delivery_id = ? AND result IS NOT NULL",
                ids,
            )
        return cursor.rowcount

    def refuse(self, delivery_id: int) -> bool:
        """The daemon refused this result for good: drop it. ``False`` if it was not there."""
        return self.confirm([delivery_id]) == 1

    # -- views -------------------------------------------------------------------------

    def holding(self) -> list[int]:
        """Delivery ids for ``hello.holding``: journaled, running, or result unconfirmed."""
        rows = self._db.execute(
            "SELECT delivery_id FROM deliveries WHERE state IN ('pending', 'running') "
            "UNION SELECT delivery_id FROM deliveries WHERE result IS NOT NULL ORDER BY 1"
        ).fetchall()
        return [r[0] for r in rows]

    def pending(self) -> list[tuple[int, int]]:
        """``(priority, delivery_id)`` of every delivery journaled but not started."""
        rows = self._db.execute(
            "SELECT priority, delivery_id FROM deliveries WHERE state = 'pending' ORDER BY delivery_id"
        ).fetchall()
        return [(r[0], r[1]) for r in rows]

    def counts(self) -> dict[str, int]:
        """``pending``, ``running``, ``outbox`` (unconfirmed results), ``finished`` (all
        finished rows still kept, confirmed or not) and ``cancelled``."""
        counts = {"pending": 0, "running": 0, "outbox": 0, "finished": 0, "cancelled": 0}
        for state, n in self._db.execute("SELECT state, count(*) FROM deliveries GROUP BY state"):
            counts[state] = n
        counts["outbox"] = self._db.execute("SELECT count(*) FROM deliveries WHERE result IS NOT NULL").fetchone()[0]
        return counts

    # -- maintenance -------------------------------------------------------------------

    def recover(self) -> list[int]:
        """After a restart: every delivery still ``running`` becomes a failed result in the
        outbox (never run again). Returns their ids. Call once, before running anything."""
        now = self._clock()
        with self._tx() as db:
            rows = db.execute(
                "SELECT delivery_id, started_at FROM deliveries WHERE state = 'running'"
            ).fetchall()
            for delivery_id, started_at in rows:
                result = Result(
                    delivery_id=delivery_id, ok=False, error=RESTARTED_WHILE_RUNNING,
                    started_at=started_at or 0.0, finished_at=now,
                )
                db.execute(
                    "UPDATE deliveries SET state = 'finished', result = ?, finished_at = ? WHERE delivery_id = ?",
                    (MSGPACK.encode(result), now, delivery_id),
                )
        return [r[0] for r in rows]

    def prune(self, retention: float = DEDUP_RETENTION) -> int:
        """Forget confirmed and cancelled deliveries that ended more than ``retention`` ago."""
        cutoff = self._clock() - retention
        with self._tx() as db:
            return db.execute(
                "DELETE FROM deliveries WHERE finished_at < ? AND (confirmed = 1 OR state = 'cancelled')",
                (cutoff,),
            ).rowcount


def _create_private(path: Path) -> None:
    """Create the journal file (and its directory) readable by the owner only."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if p.exists():
            os.chmod(p, 0o600)
