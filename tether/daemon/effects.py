"""What a committed store write means for the rest of the daemon: one :class:`Effects` value.

Every write of the store returns one (the answer to its caller in :attr:`Effects.result`),
and one place applies it (:meth:`tether.daemon.operations.Operations.apply`): deliveries to
push to online agents, timers to set on the wheel or clear, cancels to agents holding a
run the daemon ended, consoles watching a task, and what the reporting agent is told. So
no caller has to remember to forward a store result anywhere, and "an operation happened"
can be observed in one place. The store and the daemon both import this module; it
imports neither.
"""

from __future__ import annotations

import enum
from typing import Any, Generic, TypeVar

import msgspec

from ..protocol.lifecycle import CancelReason

T = TypeVar("T")

Ref = tuple[int, int]
"""``(delivery_id, run)``: one run of a delivery, as agents report on them."""


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
    poll_deadline: float = 0.0
    poll_timeout: float = 0.0
    not_before: float = 0.0
    """A delivery born ``delayed`` (its task's delay and jitter): not pushed before this
    time; its timer is set instead (0: push it now)."""


class Change(msgspec.Struct, frozen=True, array_like=True):
    """One committed delivery state change (states as :class:`~tether.protocol.lifecycle.DeliveryState`)."""

    delivery_id: int
    task_id: int
    agent_id: str
    old: str
    new: str


class Progressed(msgspec.Struct, frozen=True, array_like=True):
    """A run's progress report, committed (the text as :func:`~tether.protocol.frames.progress_text`
    makes it), for consoles watching its task (``tetherctl watch``)."""

    delivery_id: int
    task_id: int
    agent_id: str
    progress: str


class Refusal(msgspec.Struct, frozen=True, array_like=True):
    """A per-delivery refusal inside an agent's report (code from the error registry)."""

    delivery_id: int
    code: int
    message: str


class Timer(enum.IntEnum):
    """What a wheel entry is about; its key is ``id << 2 | kind`` (one int: ~1 M entries fit)."""

    EXPIRE = 0
    """A task's ttl ends (id: the task)."""
    POLL = 1
    """A polling delivery's next run is due, or its sequence times out, or a delayed
    delivery's time comes (id: the delivery)."""
    SCHEDULE = 2
    """A recurring schedule fires (id: the schedule)."""
    EXPIRE_ONE = 3
    """The ttl of a task for one agent (id: the task): cleared as soon as its one delivery
    ends, so a finished task holds no entry for the rest of its ttl (a week by default)."""


class Effects(msgspec.Struct, Generic[T]):
    """What one committed write does to the rest of the daemon, and its answer.

    Implied, so that a write need not list it per delivery: a change that ends a delivery
    clears its polling timer and its one-agent task's ttl timer."""

    result: T
    """The write's answer to its caller (a task id, a view; None for most)."""
    changes: list[Change] = []
    """Committed delivery state changes, for consoles watching their task."""
    progressed: list[Progressed] = []
    """Committed progress reports, for consoles watching their task live."""
    items: list[PushItem] = []
    """Deliveries to push to their agents if online (an agent offline gets them on connect);
    one with a ``not_before`` gets a timer for that time instead."""
    timers: list[tuple[Timer, int, float]] = []
    """``(kind, id, when)``: wheel entries to set (replacing one of the same kind and id)."""
    cleared: list[tuple[Timer, int]] = []
    """``(kind, id)``: wheel entries to clear."""
    withdraws: list[tuple[str, int, CancelReason]] = []
    """``(agent_id, delivery_id, reason)``: runs the daemon ended that the agent may hold:
    it is told to drop them (a ``cancel``), or a session not yet past pushing them drops them."""
    selecting: list[tuple[int, float]] = []
    """``(task_id, expires_at)``: selector tasks now active (agents' new facts are checked
    against them until then)."""
    unselected: list[int] = []
    """Selector tasks no longer active (cancelled)."""
    settled: list[Ref] = []
    """For the reporting agent: runs whose report is committed (or was already): it may forget them."""
    refused: list[Refusal] = []
    """For the reporting agent: reports refused, each with its error."""
    configures: list[tuple[str, Any]] = []
    """``(agent_id, configure frame)``: agents to send their configuration if online."""
