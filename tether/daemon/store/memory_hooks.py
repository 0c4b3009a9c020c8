"""Automation hooks in the in-memory store (as ``sqlite_hooks``; :mod:`.hook_records` says
what is promised)."""

from __future__ import annotations

import asyncio
import collections
import itertools

import msgspec

from ...protocol.errors import ErrorCode, ProtocolError
from ..effects import Effects
from .hook_records import RUNS_KEPT, HookRecord, OutboxIn, OutboxRow, RunRecord
from .memory_tables import MemoryTables


class _Queued(msgspec.Struct):
    row: OutboxIn
    queued_at: float
    next_at: float
    attempts: int = 0


class MemoryHooks(MemoryTables):
    def __init__(self) -> None:
        super().__init__()
        self._hooks: dict[str, HookRecord] = {}
        self._outbox: dict[int, _Queued] = {}
        self._outbox_ids = itertools.count(1)
        self._hook_runs: dict[str, collections.deque[RunRecord]] = {}

    def _hook(self, name: str) -> HookRecord:
        hook = self._hooks.get(name)
        if hook is None:
            raise ProtocolError(ErrorCode.UNKNOWN_HOOK, f"no hook named {name!r} (see: tetherctl hooks list)")
        return hook

    def _run(self, run: RunRecord) -> None:
        self._hook_runs.setdefault(run.hook, collections.deque(maxlen=RUNS_KEPT)).append(run)

    async def add_hook(self, hook: HookRecord) -> Effects[HookRecord]:
        def op() -> Effects[HookRecord]:
            if hook.name in self._hooks:
                raise ProtocolError(ErrorCode.HOOK_EXISTS, f"a hook named {hook.name!r} exists already")
            self._hooks[hook.name] = hook
            return Effects(hook)

        return self._write(op)

    async def set_hook_enabled(self, name: str, enabled: bool) -> Effects[HookRecord]:
        def op() -> Effects[HookRecord]:
            hook = self._hooks[name] = msgspec.structs.replace(self._hook(name), enabled=enabled)
            return Effects(hook)

        return self._write(op)

    async def remove_hook(self, name: str) -> Effects[int]:
        def op() -> Effects[int]:
            self._hook(name)
            del self._hooks[name]
            mine = [i for i, q in self._outbox.items() if q.row.hook == name]
            for i in mine:
                del self._outbox[i]
            self._hook_runs.pop(name, None)
            return Effects(len(mine))

        return self._write(op)

    async def list_hooks(self) -> list[HookRecord]:
        self._check_open()
        return [self._hooks[n] for n in sorted(self._hooks)]

    async def hook_pending(self) -> dict[str, int]:
        return dict(collections.Counter(q.row.hook for q in self._outbox.values()))

    def queue_hook_runs(self, runs: list[OutboxIn], now: float) -> asyncio.Future[Effects[int]]:
        def op() -> Effects[int]:
            pending = {(q.row.hook, q.row.dedup) for q in self._outbox.values() if q.row.dedup is not None}
            queued = 0
            for run in runs:
                if run.dedup is not None:
                    if (run.hook, run.dedup) in pending:
                        continue
                    pending.add((run.hook, run.dedup))
                self._outbox[next(self._outbox_ids)] = _Queued(run, now, now)
                queued += 1
            return Effects(queued)

        return self._future(op)

    async def due_hook_runs(self, now: float, limit: int, *, skip_ids: list[int],
                            skip_hooks: list[str]) -> list[OutboxRow]:
        ids, hooks = set(skip_ids), set(skip_hooks)
        due = sorted((q.next_at, i) for i, q in self._outbox.items()
                     if q.next_at <= now and i not in ids and q.row.hook not in hooks)[:limit]
        return [OutboxRow(i, q.row.hook, q.row.trigger, q.row.payload, q.attempts, q.queued_at)
                for i, q in ((i, self._outbox[i]) for _, i in due)]

    async def end_hook_run(self, outbox_id: int, run: RunRecord, retry_at: float | None) -> Effects[None]:
        def op() -> Effects[None]:
            self._run(run)
            queued = self._outbox.get(outbox_id)
            if queued is not None:
                if retry_at is None:
                    del self._outbox[outbox_id]
                else:
                    queued.attempts += 1
                    queued.next_at = retry_at
            return Effects(None)

        return self._write(op)

    def record_hook_run(self, run: RunRecord) -> asyncio.Future[Effects[None]]:
        def op() -> Effects[None]:
            self._run(run)
            return Effects(None)

        return self._future(op)

    async def hook_runs(self, name: str, limit: int) -> list[RunRecord]:
        return list(reversed(self._hook_runs.get(name, ())))[:limit]
