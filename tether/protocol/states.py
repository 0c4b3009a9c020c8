"""The delivery state machine: one table, read top to bottom (after h11's ``_state.py``).

Every state change in the daemon goes through :func:`transition`; a change the table does
not allow raises :class:`IllegalTransition`, never passes silently.

::

    queued -> sent -> acked -> running -> done | failed
       \\_______\\_______\\______\\-> expired (ttl) | cancelled (untask)
    running -> waiting (polling) -> queued (the next run, run + 1) -> sent -> ...
    waiting -> failed (the polling sequence timed out) | expired (ttl) | cancelled

A waiting delivery's next run is queued when it falls due, whether or not its agent is
online, and pushed like any queued delivery; its result arrives as that run's ``result``.

A result is the authority on what happened: it may arrive for a delivery the daemon still
believes ``queued`` or ``sent`` (the daemon crashed before it committed the push or the
ack, and the agent's outbox re-sent the result after reconnecting).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

from .errors import ErrorCode, ProtocolError


class DeliveryState(enum.StrEnum):
    QUEUED = "queued"
    SENT = "sent"
    ACKED = "acked"
    RUNNING = "running"
    WAITING = "waiting"
    DONE = "done"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


S = DeliveryState

TRANSITIONS: dict[DeliveryState, frozenset[DeliveryState]] = {
    #  from        to
    S.QUEUED:  frozenset({S.SENT, S.ACKED, S.RUNNING, S.DONE, S.FAILED, S.EXPIRED, S.CANCELLED}),
    S.SENT:    frozenset({S.ACKED, S.RUNNING, S.DONE, S.FAILED, S.EXPIRED, S.CANCELLED}),
    S.ACKED:   frozenset({S.RUNNING, S.DONE, S.FAILED, S.CANCELLED}),
    S.RUNNING: frozenset({S.WAITING, S.DONE, S.FAILED, S.CANCELLED}),
    S.WAITING: frozenset({S.QUEUED, S.FAILED, S.EXPIRED, S.CANCELLED}),
    S.DONE:      frozenset(),
    S.FAILED:    frozenset(),
    S.EXPIRED:   frozenset(),
    S.CANCELLED: frozenset(),
}

TERMINAL = frozenset({S.DONE, S.FAILED, S.EXPIRED, S.CANCELLED})
PENDING = frozenset(TRANSITIONS) - TERMINAL
"""States in which a delivery can still run: untask cancels these."""
UNDELIVERED = frozenset({S.QUEUED, S.SENT})
"""A run the agent has not acknowledged yet: the ttl (and a polling timeout) still stop it."""
TTL_BOUND = UNDELIVERED | {S.WAITING}
"""States the ttl ends: a run not yet acknowledged, or a next run not yet due (it would fall
after the ttl). Once the agent acknowledged a run, it runs to completion."""


def task_state(stored: str, one_agent: bool, deliveries: Iterable[str]) -> str:
    """How a task reads to a person. A task for a tag, a selector or all agents reads as
    ``stored`` (``active``: it still reaches new agents; ``closed``; ``cancelled``). A task
    for one agent whose deliveries (its own and its polling sequels') have all ended reads
    as how they ended -- ``done``, else the first of ``failed``, ``expired``, ``cancelled``
    -- as ``wait`` sees it, rather than ``active`` until its ttl runs out."""
    states = [S(d) for d in deliveries]
    if not one_agent or not states or not all(d.terminal for d in states):
        return stored
    for end in (S.FAILED, S.EXPIRED, S.CANCELLED):
        if end in states:
            return end.value
    return S.DONE.value


class IllegalTransition(ProtocolError):
    def __init__(self, delivery_id: int, old: DeliveryState, new: DeliveryState) -> None:
        super().__init__(
            ErrorCode.ILLEGAL_TRANSITION,
            f"delivery {delivery_id} is {old.value}; it cannot become {new.value}",
            ref=delivery_id,
        )
        self.old = old
        self.new = new


def transition(delivery_id: int, old: DeliveryState | str, new: DeliveryState) -> DeliveryState:
    """Check that ``old -> new`` is allowed and return ``new``; raise otherwise."""
    old = DeliveryState(old)
    if new not in TRANSITIONS[old]:
        raise IllegalTransition(delivery_id, old, new)
    return new


def allowed(old: DeliveryState | str, new: DeliveryState) -> bool:
    return new in TRANSITIONS[DeliveryState(old)]
