"""The SQLite store: one file in WAL mode, one writer committing in groups (``writer.py``).

Reads use a second connection; WAL lets them run while the writer commits, and they see
only committed data. All SQL of the daemon lives in this package.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path
from typing import Any

import aiosqlite

from ...protocol import lifecycle
from ...protocol.codec import pack
from ...protocol.errors import ErrorCode, ProtocolError
from ...protocol.lifecycle import TASK, DeliveryEvent, TaskEvent, sql_in
from ...protocol.tags import check_tag_count
from ..effects import Change, Effects
from . import NewTask, StoreError, StoreStats, Untasked
from .rules import MAX_ID, selector
from .schema import apply_migrations, open_checked
from .sqlite_agents import SQLiteAgents
from .sqlite_alerts import SQLiteAlerts
from .sqlite_config import SQLiteConfig
from .sqlite_credentials import SQLiteCredentials
from .sqlite_hooks import SQLiteHooks
from .sqlite_reads import SQLiteReads
from .sqlite_runs import SQLiteRuns
from .sqlite_schedules import SQLiteSchedules
from .sqlite_states import SQLiteStates
from .sqlite_tasks import (
    all_facts,
    check_agent,
    check_target,
    insert_task,
    materialise,
    materialise_selected,
)
from .writer import GroupWriter, Op, Tx, chunks, on_connection_thread

NO_PAGE_CAP = 4_294_967_294
"""SQLite's largest page count: "no cap" for ``PRAGMA max_page_count``."""



class SQLiteStore(SQLiteReads, SQLiteRuns, SQLiteSchedules, SQLiteCredentials, SQLiteAgents, SQLiteAlerts,
                  SQLiteHooks, SQLiteStates, SQLiteConfig):
    """The default store. ``path`` may be ``":memory:"`` for tests (one connection then)."""

    def __init__(self, path: Path | str, *, synchronous: str = "full", max_batch: int = 4096,
                 max_database_mb: int = 0) -> None:
        self.path = Path(path) if path != ":memory:" else None
        self.synchronous = synchronous.upper()
        self.max_batch = max_batch
        self.max_database_mb = max_database_mb
        self._w: aiosqlite.Connection | None = None
        self._r: aiosqlite.Connection | None = None
        self._writer: GroupWriter | None = None

    # -- lifecycle ------------------------------------------------------------------------

    async def open(self) -> None:
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            open_checked(self.path).close()
            self._w = await aiosqlite.connect(self.path, isolation_level=None)
        else:
            self._w = await aiosqlite.connect(":memory:", isolation_level=None)
        await self._w.execute("PRAGMA journal_mode = WAL")
        await self._w.execute(f"PRAGMA synchronous = {self.synchronous}")
        await self._w.execute("PRAGMA busy_timeout = 5000")
        await self._w.execute("PRAGMA foreign_keys = ON")
        await on_connection_thread(self._w, apply_migrations, self._w._conn)
        await self.set_max_database_mb(self.max_database_mb)
        if self.path is not None:
            self._r = await aiosqlite.connect(self.path, isolation_level=None)
            await self._r.execute("PRAGMA query_only = ON")
            await self._r.execute("PRAGMA busy_timeout = 5000")
        else:
            self._r = self._w
        self._writer = GroupWriter(self._w, self.max_batch)
        self._writer.start()

    async def close(self) -> None:
        if self._writer is None:
            return
        await self._writer.stop()
        self._writer = None
        if self._r is not None and self._r is not self._w:
            await self._r.close()
        if self._w is not None:
            with contextlib.suppress(sqlite3.Error):
                await self._w.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            await self._w.close()

    async def set_max_database_mb(self, mb: int) -> int:
        """Cap the database at ``mb`` MiB (0: no cap but the disk's); returns the cap in
        pages. A cap below the file's current size holds it at that size."""
        assert self._w is not None
        self.max_database_mb = mb
        page_size = (await (await self._w.execute("PRAGMA page_size")).fetchone() or (4096,))[0]
        pages = mb * 1024 * 1024 // page_size if mb else NO_PAGE_CAP
        row = await (await self._w.execute(f"PRAGMA max_page_count = {int(pages)}")).fetchone()
        return int(row[0]) if row else pages

    async def flush(self) -> None:
        await self._submit(lambda tx: None)

    def stats(self) -> StoreStats:
        return self._writer.stats() if self._writer is not None else StoreStats()

    def _submit(self, op: Op) -> asyncio.Future[Any]:
        if self._writer is None:
            raise StoreError("the store is closed")
        return self._writer.submit(op)

    def _submit_quiet(self, op: Op, what: str) -> None:
        if self._writer is None:
            raise StoreError("the store is closed")
        self._writer.submit_quiet(op, what)


    # -- agents ---------------------------------------------------------------------------

    def agent_seen(
        self, agent_id: str, hostname: str, platform: str, commands: list[str], version: str, now: float
    ) -> None:
        self._submit_quiet(lambda tx: tx.execute(
            "UPDATE agents SET hostname = ?, platform = ?, commands = ?, agent_version = ?, last_seen = ?"
            " WHERE id = ?",
            (hostname, platform, pack(commands), version, now, agent_id),
        ), "agent_seen")

    # -- tasks and deliveries -------------------------------------------------------------

    async def create_task(self, task: NewTask, now: float) -> Effects[int]:
        def op(tx: Tx) -> Effects[int]:
            check_target(tx, task.target_kind, task.target)
            return insert_task(tx, task, now)

        result: Effects[int] = await self._submit(op)
        return result

    def mark_sent(self, delivery_ids: list[int], now: float) -> None:
        def op(tx: Tx) -> None:
            # One UPDATE for the lot: only queued ones move (every other state ignores it).
            if delivery_ids:
                tx.apply_many(lifecycle.mark_sent(delivery_ids[0], lifecycle.BORN, now), delivery_ids, now)

        self._submit_quiet(op, "mark_sent")

    def _end(self, tx: Tx, effects: Effects[Any], where: str, params: tuple[Any, ...], event: DeliveryEvent,
             now: float, error: str = "") -> None:
        """End the deliveries that match, as the daemon's own decision (ttl, untask)."""
        states = sql_in(lifecycle.moves(lifecycle.DELIVERY, event)[0])
        rows = tx.execute(
            f"SELECT id, task_id, agent_id, state FROM deliveries WHERE {where} AND state IN {states}", params
        ).fetchall()
        for d_id, task_id, agent_id, state in rows:
            decision = lifecycle.end_by_daemon(d_id, state, event, now, error)
            tx.apply(d_id, decision, now)
            assert decision.new is not None
            effects.changes.append(Change(d_id, task_id, agent_id, decision.old, decision.new))
            if decision.withdraw is not None:
                effects.withdraws.append((agent_id, d_id, decision.withdraw))

    def _end_unfinished(self, tx: Tx, effects: Effects[Any], agent_id: str, now: float) -> None:
        """Cancel every unfinished delivery of the agent, the daemon's decision."""
        self._end(tx, effects, "agent_id = ?", (agent_id,), DeliveryEvent.UNTASK, now)

    def expire_task(self, task_id: int, now: float) -> asyncio.Future[Effects[None]]:
        def op(tx: Tx) -> Effects[None]:
            effects: Effects[None] = Effects(None)
            _close_tasks(tx, TaskEvent.TTL_END, "id = ?", (task_id,))
            self._end(tx, effects, "task_id = ?", (task_id,), DeliveryEvent.TTL_END, now, lifecycle.TTL_ENDED)
            return effects

        return self._submit(op)

    async def cancel(
        self, *, task_id: int | None = None, agent_id: str | None = None, tag: str | None = None,
        selector: str | None = None, now: float,
    ) -> Effects[Untasked]:
        def op(tx: Tx) -> Effects[Untasked]:
            effects: Effects[Untasked] = Effects(Untasked(0, 0))
            closed: list[int] = []
            untask = DeliveryEvent.UNTASK
            if task_id is not None and (agent_id, tag, selector) != (None, None, None):
                self._cancel_for(tx, effects, task_id, agent_id, tag, selector, now)
            elif task_id is not None:
                if not tx.one("SELECT 1 FROM tasks WHERE id = ?", (min(task_id, MAX_ID),)):
                    raise ProtocolError(ErrorCode.UNKNOWN_TASK, f"no task {task_id}")
                closed = _close_tasks(tx, TaskEvent.UNTASK, "(id = ? OR parent_id = ?) AND expires_at > ?",
                                      (task_id, task_id, now))
                # with the polling sequences its runs started (sequels)
                self._end(tx, effects, "task_id IN (SELECT ? UNION ALL SELECT id FROM tasks WHERE parent_id = ?)",
                          (task_id, task_id), untask, now)
            elif selector is not None:
                closed = _close_tasks(tx, TaskEvent.UNTASK, "selector = ?", (selector,))
                for chunk in chunks(_selected(tx, selector)):
                    self._end(tx, effects, f"agent_id IN ({','.join('?' * len(chunk))})", tuple(chunk), untask, now)
                self._end(tx, effects, "task_id IN (SELECT id FROM tasks WHERE selector = ?)", (selector,), untask,
                          now)
            elif agent_id is not None:
                check_agent(tx, agent_id)
                self._end_unfinished(tx, effects, agent_id, now)
            else:
                closed = _close_tasks(tx, TaskEvent.UNTASK, "target_kind = 'tag' AND target = ?", (tag,))
                if not closed and not tx.one("SELECT 1 FROM agent_tags WHERE tag = ?", (tag,)):
                    raise ProtocolError(ErrorCode.UNKNOWN_TAG,
                                        f"no agent carries tag {tag!r} and no task is aimed at it: nothing to cancel")
                where = "agent_id IN (SELECT agent_id FROM agent_tags WHERE tag = ?)"
                where += " OR task_id IN (SELECT id FROM tasks WHERE target_kind = 'tag' AND target = ?)"
                self._end(tx, effects, f"({where})", (tag, tag), untask, now)
            if tag is None:  # a tag untask closes tag tasks only
                effects.unselected = closed
            effects.result = Untasked(len(effects.changes), len(closed))
            return effects

        result: Effects[Untasked] = await self._submit(op)
        return result

    def _cancel_for(self, tx: Tx, effects: Effects[Untasked], task_id: int, agent_id: str | None, tag: str | None,
                    selector: str | None, now: float) -> None:
        """Untask one task for some agents only (LimaCharlie's reliable delete: ``sid`` and
        ``task_id``). An agent the task has not reached yet gets its delivery as cancelled,
        so a tag or selector task never reaches it later."""
        task = tx.one("SELECT priority FROM tasks WHERE id = ?", (min(task_id, MAX_ID),))
        if task is None:
            raise ProtocolError(ErrorCode.UNKNOWN_TASK, f"no task {task_id}")
        if agent_id is not None:
            check_agent(tx, agent_id)
            agents = [agent_id]
        elif tag is not None:
            agents = [r[0] for r in tx.execute("SELECT agent_id FROM agent_tags WHERE tag = ?", (tag,))]
        else:
            assert selector is not None
            agents = _selected(tx, selector)
        # What untasking a delivery just born makes of it, to insert it so.
        unborn = lifecycle.end_by_daemon(0, lifecycle.BORN, DeliveryEvent.UNTASK, now)
        assert unborn.new is not None
        state, columns = unborn.new.value, unborn.columns
        insert = (f"INSERT OR IGNORE INTO deliveries (task_id, agent_id, state, priority, updated_at,"
                  f" {', '.join(columns)}) VALUES (?, ?, ?, ?, ?{', ?' * len(columns)})")
        for chunk in chunks(agents):
            marks = ",".join("?" * len(chunk))
            self._end(tx, effects, f"task_id = ? AND agent_id IN ({marks})", (task_id, *chunk), DeliveryEvent.UNTASK,
                      now)
            tx.conn.executemany(insert, [(task_id, a, state, task[0], now, *columns.values()) for a in chunk])

    async def tag_add(self, agent_id: str, tag: str, now: float) -> Effects[None]:
        def op(tx: Tx) -> Effects[None]:
            check_agent(tx, agent_id)
            if tx.execute("INSERT OR IGNORE INTO agent_tags (agent_id, tag) VALUES (?, ?)", (agent_id, tag)).rowcount:
                count = tx.one("SELECT count(*) FROM agent_tags WHERE agent_id = ?", (agent_id,))[0]
                check_tag_count(count, whose=f"agent {agent_id}")
            return Effects(None, items=materialise(tx, agent_id, [tag], now, include_all=False)
                           + materialise_selected(tx, agent_id, now))

        result: Effects[None] = await self._submit(op)
        return result

    async def tag_rm(self, agent_id: str, tag: str, now: float) -> Effects[None]:
        def op(tx: Tx) -> Effects[None]:
            check_agent(tx, agent_id)
            if not tx.execute("DELETE FROM agent_tags WHERE agent_id = ? AND tag = ?", (agent_id, tag)).rowcount:
                raise ProtocolError(ErrorCode.UNKNOWN_TAG, f"agent {agent_id} does not carry tag {tag!r}")
            return Effects(None, items=materialise_selected(tx, agent_id, now))  # e.g. not "staging" in tags

        result: Effects[None] = await self._submit(op)
        return result

    def select_for_agent(self, agent_id: str, hostname: str, platform: str,
                         now: float) -> asyncio.Future[Effects[None]]:
        def op(tx: Tx) -> Effects[None]:
            tx.execute("UPDATE agents SET hostname = ?, platform = ? WHERE id = ?", (hostname, platform, agent_id))
            return Effects(None, items=materialise_selected(tx, agent_id, now))

        return self._submit(op)


def _close_tasks(tx: Tx, event: TaskEvent, where: str, params: tuple[Any, ...]) -> list[int]:
    """Apply ``event`` to the tasks that match (those it moves: the active ones); their ids."""
    olds, new = lifecycle.moves(TASK, event)
    return [r[0] for r in tx.execute(f"UPDATE tasks SET state = ? WHERE ({where}) AND state IN {sql_in(olds)}"
                                     " RETURNING id", (new.value, *params))]


def _selected(tx: Tx, text: str) -> list[str]:
    """The agents a selector matches now."""
    match = selector(text)
    return [f.sid for f in all_facts(tx) if match(f)]

