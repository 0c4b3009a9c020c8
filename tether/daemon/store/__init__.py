"""The store: everything tetherd knows, behind one protocol.

The daemon speaks to :class:`Store` only; SQL lives in :mod:`.sqlite` (and a future
PostgreSQL backend slots in behind the same protocol). Promises every backend keeps:

* a write is visible to readers, and its awaitable resolves, only after it is committed;
* writes are applied in the order they were submitted (one writer, group commits), so the
  order of state changes in the store is the order of frames on the wire;
* every delivery state change goes through :func:`tether.protocol.states.transition`.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

import msgspec

from ...protocol.console import AgentView, DeliveryRow, TaskView


class StoreError(Exception):
    """The store cannot do what was asked (not a bug in the caller): refused with 1503."""


class PushItem(msgspec.Struct, frozen=True, array_like=True):
    """What a session needs to push one delivery, without another read."""

    delivery_id: int
    task_id: int
    agent_id: str
    command: str
    args: bytes
    """MessagePack of the task's args."""
    priority: int
    expires_at: float
    run: int = 1


class Change(msgspec.Struct, frozen=True, array_like=True):
    """One committed delivery state change."""

    delivery_id: int
    task_id: int
    agent_id: str
    old: str
    new: str


class Refusal(msgspec.Struct, frozen=True, array_like=True):
    """A per-delivery refusal inside a batch (code from the error registry)."""

    delivery_id: int
    code: int
    message: str


class ResultIn(msgspec.Struct, frozen=True, array_like=True):
    delivery_id: int
    ok: bool
    output: bytes
    error: str
    started_at: float
    finished_at: float


class Outcome(msgspec.Struct, frozen=True):
    """What a batch of agent reports did: changes applied, ids settled, refusals."""

    changes: list[Change]
    settled: list[int]
    """Delivery ids whose report is committed (or was already): the agent may forget them."""
    refused: list[Refusal]


class NewTask(msgspec.Struct, frozen=True, kw_only=True):
    command: str
    args: dict[str, Any]
    target_kind: str
    """``agent``, ``tag`` or ``all``."""
    target: str
    priority: int
    ttl: int


class StoreStats(msgspec.Struct, frozen=True, kw_only=True):
    """Counters for /metrics."""

    entered: dict[str, int] = {}
    """Committed delivery state changes, by the state entered."""
    commits: int = 0
    commit_ops: int = 0
    commit_seconds: float = 0.0
    last_commit_seconds: float = 0.0


class Enrollment(msgspec.Struct, frozen=True):
    agent_id: str
    token: str
    tags: list[str]


class AgentAuth(msgspec.Struct, frozen=True):
    agent_id: str
    tags: list[str]


class Store(Protocol):
    """Everything the daemon persists. See the module docstring for the promises."""

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def flush(self) -> None:
        """Wait until every write submitted so far is committed."""
    def stats(self) -> StoreStats: ...

    # credentials
    async def bootstrap(self, now: float) -> tuple[str, str] | None:
        """On an empty store, make the first admin token and enrollment key; else None."""
    async def create_admin_token(self, role: str, label: str, now: float) -> str: ...
    async def create_enroll_key(
        self, tags: list[str], expires_at: float | None, uses: int | None, now: float
    ) -> str: ...
    async def admin_role(self, token: str) -> str | None: ...
    async def enroll(
        self, key: str, machine_uuid: str, hostname: str, platform: str, tags: list[str], now: float
    ) -> Enrollment: ...
    async def authenticate_agent(self, agent_id: str, token: str) -> AgentAuth | None: ...
    def agent_seen(
        self, agent_id: str, hostname: str, platform: str, commands: list[str], version: str, now: float
    ) -> None:
        """Record the facts from an agent's hello (fire and forget)."""

    # tasks and deliveries
    async def create_task(self, task: NewTask, now: float) -> tuple[int, list[PushItem]]: ...
    async def pending_for_agent(self, agent_id: str) -> list[PushItem]: ...
    def mark_sent(self, delivery_ids: list[int], now: float) -> None:
        """queued -> sent, in submission order (fire and forget)."""
    # Agent reports arrive at frame rate: these return the write's future directly, so the
    # session can react on commit (a callback) without a task per frame.
    def acknowledge(self, agent_id: str, delivery_ids: list[int], now: float) -> asyncio.Future[Outcome]: ...
    def started(self, agent_id: str, delivery_id: int, message: str, now: float) -> asyncio.Future[Outcome]: ...
    def record_results(self, agent_id: str, results: list[ResultIn], now: float) -> asyncio.Future[Outcome]: ...
    async def expire_task(self, task_id: int, now: float) -> list[Change]: ...
    async def cancel(
        self, *, task_id: int | None = None, agent_id: str | None = None, tag: str | None = None, now: float
    ) -> list[Change]: ...
    async def tag_add(self, agent_id: str, tag: str, now: float) -> list[PushItem]: ...
    async def tag_rm(self, agent_id: str, tag: str, now: float) -> bool: ...

    # reads
    async def list_agents(self, tag: str | None) -> list[AgentView]: ...
    async def agent_commands(self, agent_id: str) -> list[str] | None:
        """The commands the agent announced, [] if it never connected, None if unknown."""
    async def get_task(self, task_id: int) -> TaskView | None: ...
    async def list_deliveries(
        self, *, agent_id: str | None, tag: str | None, states: list[str] | None, limit: int
    ) -> list[DeliveryRow]: ...
    async def active_expiries(self) -> list[tuple[int, float]]:
        """(task_id, expires_at) of every task still active, to rebuild the timer wheel."""
