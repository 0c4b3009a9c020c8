"""What the store keeps of automation hooks (issue 20), and the part of the Store protocol
about them: the hooks themselves, the after-hooks' outbox, and every run.

Promises (both backends; ``tests/daemon/store/test_store_hooks.py``): a hook's name is unique
and case-sensitive; a queued run stays in the outbox until its end is recorded, so a run
queued before a crash is run after the restart (at least once); every run is recorded.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

import msgspec

from ..effects import Effects

RUNS_KEPT = 1000
"""Runs kept per hook (the oldest are dropped): a hook that fires all day stays bounded."""


class HookRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A hook as stored, its secret included (the daemon never shows it: ``HookView``)."""

    name: str
    trigger: str
    action: str
    """``script``, ``web`` or ``email``."""
    target: str
    """The script's name, the URL, or the recipients (comma-separated)."""
    timeout: float
    on_timeout: str
    enabled: bool = True
    fingerprint: str = ""
    secret: str = ""
    subject: str = ""
    body: str = ""
    data: dict[str, Any] = {}
    tags: list[str] = []
    description: str = ""
    created_at: float = 0.0


class OutboxIn(msgspec.Struct, frozen=True):
    """A run to queue: the hook, its trigger and the payload (JSON)."""

    hook: str
    trigger: str
    payload: bytes
    dedup: str | None = None
    """Queued at most once while pending, for this hook and key."""


class OutboxRow(msgspec.Struct, frozen=True):
    id: int
    hook: str
    trigger: str
    payload: bytes
    attempts: int
    queued_at: float


class RunRecord(msgspec.Struct, frozen=True, kw_only=True):
    hook: str
    trigger: str
    started_at: float
    duration: float
    outcome: str
    """``ok``, ``vetoed``, ``error`` or ``timeout``."""
    message: str = ""
    attempt: int = 1
    test: bool = False


class HookStore(Protocol):
    async def add_hook(self, hook: HookRecord) -> Effects[HookRecord]:
        """Refused with HOOK_EXISTS if the name is taken (case-sensitive)."""
    async def set_hook_enabled(self, name: str, enabled: bool) -> Effects[HookRecord]:
        """UNKNOWN_HOOK if there is none."""
    async def remove_hook(self, name: str) -> Effects[int]:
        """The hook, its queued runs (their count the result) and its run records."""
    async def list_hooks(self) -> list[HookRecord]: ...
    async def hook_pending(self) -> dict[str, int]:
        """Queued runs, by hook."""
    def queue_hook_runs(self, runs: list[OutboxIn], now: float) -> asyncio.Future[Effects[int]]:
        """Into the outbox, due now (a run whose ``dedup`` is pending already is not queued
        again); the result: how many were queued."""
    async def due_hook_runs(self, now: float, limit: int, *, skip_ids: list[int],
                            skip_hooks: list[str]) -> list[OutboxRow]:
        """Queued runs due by ``now``, oldest first, but those named."""
    async def end_hook_run(self, outbox_id: int, run: RunRecord, retry_at: float | None) -> Effects[None]:
        """Record an attempt; the run leaves the outbox, or (``retry_at``) waits until then."""
    def record_hook_run(self, run: RunRecord) -> asyncio.Future[Effects[None]]:
        """Record a run that was not queued (a before-hook's, a test's), in submission order:
        committed before any write submitted after it (the operation a before-hook let through)."""
    async def hook_runs(self, name: str, limit: int) -> list[RunRecord]:
        """Newest first."""
