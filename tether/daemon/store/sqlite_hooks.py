"""Automation hooks in the SQLite store (:mod:`.hook_records` says what is promised).

The outbox is a table of the same file as everything else: a run queued is committed by the
same writer, in the group after its operation's, and leaves the table only when its end is
recorded.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from ...protocol.errors import ErrorCode, ProtocolError
from ..effects import Effects
from .hook_records import RUNS_KEPT, HookRecord, OutboxIn, OutboxRow, RunRecord
from .writer import Op, Tx, chunks

_decode = msgspec.msgpack.Decoder(HookRecord).decode
_encode = msgspec.msgpack.Encoder().encode


def _unknown(name: str) -> ProtocolError:
    return ProtocolError(ErrorCode.UNKNOWN_HOOK, f"no hook named {name!r} (see: tetherctl hooks list)")


def _record(row: Any) -> HookRecord:
    return msgspec.structs.replace(_decode(row[0]), enabled=bool(row[1]))


def _insert_run(tx: Tx, run: RunRecord) -> None:
    tx.execute("INSERT INTO hook_runs (hook, trigger, started_at, duration, outcome, message, attempt, test)"
               " VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (run.hook, run.trigger, run.started_at, run.duration, run.outcome,
                                                    run.message, run.attempt, int(run.test)))
    tx.execute("DELETE FROM hook_runs WHERE hook = ? AND id <= (SELECT id FROM hook_runs WHERE hook = ?"
               " ORDER BY id DESC LIMIT 1 OFFSET ?)", (run.hook, run.hook, RUNS_KEPT))


class SQLiteHooks:
    """Mixed into :class:`~.sqlite.SQLiteStore`, which provides ``_submit`` and ``_read``."""

    _submit: Callable[[Op], asyncio.Future[Any]]
    _read: Callable[..., Awaitable[list[Any]]]

    async def add_hook(self, hook: HookRecord) -> Effects[HookRecord]:
        def op(tx: Tx) -> Effects[HookRecord]:
            try:
                tx.execute("INSERT INTO hooks (name, spec, enabled, created_at) VALUES (?, ?, ?, ?)",
                           (hook.name, _encode(hook), int(hook.enabled), hook.created_at))
            except sqlite3.IntegrityError:
                raise ProtocolError(ErrorCode.HOOK_EXISTS, f"a hook named {hook.name!r} exists already") from None
            return Effects(hook)

        result: Effects[HookRecord] = await self._submit(op)
        return result

    async def set_hook_enabled(self, name: str, enabled: bool) -> Effects[HookRecord]:
        def op(tx: Tx) -> Effects[HookRecord]:
            row = tx.one("UPDATE hooks SET enabled = ? WHERE name = ? RETURNING spec, enabled", (int(enabled), name))
            if row is None:
                raise _unknown(name)
            return Effects(_record(row))

        result: Effects[HookRecord] = await self._submit(op)
        return result

    async def remove_hook(self, name: str) -> Effects[int]:
        def op(tx: Tx) -> Effects[int]:
            if tx.execute("DELETE FROM hooks WHERE name = ?", (name,)).rowcount == 0:
                raise _unknown(name)
            dropped = tx.execute("DELETE FROM hook_outbox WHERE hook = ?", (name,)).rowcount
            tx.execute("DELETE FROM hook_runs WHERE hook = ?", (name,))
            return Effects(dropped)

        result: Effects[int] = await self._submit(op)
        return result

    async def list_hooks(self) -> list[HookRecord]:
        return [_record(r) for r in await self._read("SELECT spec, enabled FROM hooks ORDER BY name")]

    async def hook_pending(self) -> dict[str, int]:
        return dict(await self._read("SELECT hook, count(*) FROM hook_outbox GROUP BY hook"))

    def queue_hook_runs(self, runs: list[OutboxIn], now: float) -> asyncio.Future[Effects[int]]:
        def op(tx: Tx) -> Effects[int]:
            cursor = tx.conn.executemany(
                "INSERT OR IGNORE INTO hook_outbox (hook, trigger, payload, dedup, queued_at, next_at)"
                " VALUES (?, ?, ?, ?, ?, ?)", [(r.hook, r.trigger, r.payload, r.dedup, now, now) for r in runs])
            return Effects(cursor.rowcount)

        return self._submit(op)

    async def due_hook_runs(self, now: float, limit: int, *, skip_ids: list[int],
                            skip_hooks: list[str]) -> list[OutboxRow]:
        where, params = "", []
        for column, values in (("id", skip_ids), ("hook", skip_hooks)):
            for chunk in chunks(list(values)):
                where += f" AND {column} NOT IN ({','.join('?' * len(chunk))})"
                params += chunk
        rows = await self._read(
            "SELECT id, hook, trigger, payload, attempts, queued_at FROM hook_outbox WHERE next_at <= ?"
            f"{where} ORDER BY next_at, id LIMIT ?", (now, *params, limit))
        return [OutboxRow(*r) for r in rows]

    async def end_hook_run(self, outbox_id: int, run: RunRecord, retry_at: float | None) -> Effects[None]:
        def op(tx: Tx) -> Effects[None]:
            _insert_run(tx, run)
            if retry_at is None:
                tx.execute("DELETE FROM hook_outbox WHERE id = ?", (outbox_id,))
            else:
                tx.execute("UPDATE hook_outbox SET attempts = attempts + 1, next_at = ? WHERE id = ?",
                           (retry_at, outbox_id))
            return Effects(None)

        result: Effects[None] = await self._submit(op)
        return result

    def record_hook_run(self, run: RunRecord) -> asyncio.Future[Effects[None]]:
        def op(tx: Tx) -> Effects[None]:
            _insert_run(tx, run)
            return Effects(None)

        return self._submit(op)

    async def hook_runs(self, name: str, limit: int) -> list[RunRecord]:
        rows = await self._read(
            "SELECT hook, trigger, started_at, duration, outcome, message, attempt, test FROM hook_runs"
            " WHERE hook = ? ORDER BY id DESC LIMIT ?", (name, limit))
        return [RunRecord(hook=r[0], trigger=r[1], started_at=r[2], duration=r[3], outcome=r[4], message=r[5],
                          attempt=r[6], test=bool(r[7])) for r in rows]
