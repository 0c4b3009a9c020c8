"""The lifecycles of tether's records: each one table, read top to bottom, that decides.

After h11's ``_state.py``: a table that does not only say which moves are allowed but
*which event moves which state*, so that the store applies decisions instead of making
them. Three machines live here, and no state name is spelled anywhere else:

* a **delivery** (the daemon's record of one task for one agent):
  :data:`DELIVERY`, :class:`DeliveryState` x :class:`DeliveryEvent`;
* a **task**: :data:`TASK`, :class:`TaskState` x :class:`TaskEvent`;
* a **run** in the agent's journal: :data:`RUN`, :class:`RunState` x :class:`RunEvent`.

The delivery's decisions are functions of its facts and one event (:func:`acknowledge`,
:func:`progress`, :func:`finish`, :func:`schedule`, :func:`poll_due`, :func:`end_by_daemon`,
:func:`mark_sent`) that return a :class:`Decision`: the new state or none, the columns to
write with it, the history entry, the polling timer, and whether the agent holding the run
must be told to drop it. Polling follows Cortex XSOAR's "Scheduled Commands"
(``protocol.polling`` holds its numbers); the ttl follows LimaCharlie's reliable tasking.

::

    queued -> sent -> acked -> running -> done | failed
       \\_______\\_______\\______\\-> expired (ttl) | cancelled (untask)
    running -> waiting (polling) -> queued (the next run, run + 1) -> sent -> ...
    waiting -> failed (the polling sequence timed out) | expired (ttl) | cancelled
    delayed (not before its time: --delay, --jitter) -> queued | expired (ttl) | cancelled

A result is the authority on what happened: it may arrive for a delivery the daemon still
believes ``queued`` or ``sent`` (the daemon crashed before it committed the push or the ack,
and the agent's outbox re-sent the result after reconnecting), so those states take it too.

Whose fault is an event the table does not list? An agent's report (an ack, progress or a
result for a delivery that was cancelled) is the peer's: :class:`IllegalTransition`, a
:class:`~.errors.RemoteProtocolError`, answered with ``illegal_transition (1304)``. One of the
daemon's own events (a ttl, a timer, an untask) is tetherd's bug:
:class:`~.errors.LocalProtocolError`.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol, TypeVar

import msgspec

from .errors import ErrorCode, LocalProtocolError, ProtocolError, RemoteProtocolError
from .polling import timeout_error

# -- states and events ---------------------------------------------------------------------


class DeliveryState(enum.StrEnum):
    """Where one delivery (a task for one agent) is; stored as its value."""

    DELAYED = "delayed"
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


class DeliveryEvent(enum.Enum):
    """What can happen to a delivery. The first five are an agent's reports; the rest are
    the daemon's own decisions."""

    ACK = "ack"
    """The agent journaled the run (it will run even if the agent restarts)."""
    PROGRESS = "progress"
    """The run started, or says how far it got."""
    FINISH = "finish"
    """The run's result: ok, and no next run asked for."""
    FAIL = "fail"
    """The run's result: failed."""
    SCHEDULE = "schedule"
    """The run's result asks to be run again (XSOAR ``ScheduledCommand``)."""
    UNACKED = "unacked"
    """The run was pushed and is still unacknowledged (after a while, or its session ended)."""
    RUN_DUE = "run_due"
    """A waiting delivery's next run fell due, or a delayed delivery's time came."""
    POLL_TIMEOUT = "poll_timeout"
    """The polling sequence's timeout passed (XSOAR writes the error entry itself)."""
    TTL_END = "ttl_end"
    """The task's ttl ended."""
    UNTASK = "untask"
    """An operator cancelled it (untask, or the agent was removed)."""

    @property
    def by_agent(self) -> bool:
        return self in _AGENT_EVENTS

    # A member is its own only instance: hashed by identity, in C (Enum's hashes its name in
    # Python), for the table's lookup made once per report.
    __hash__ = object.__hash__


_AGENT_EVENTS: Final = frozenset({DeliveryEvent.ACK, DeliveryEvent.PROGRESS, DeliveryEvent.FINISH,
                                  DeliveryEvent.FAIL, DeliveryEvent.SCHEDULE})


class Ignored(enum.Enum):
    """The event changes nothing (a repeated or late report, a timer that lost a race)."""

    IGNORED = "ignored"


IGNORED: Final = Ignored.IGNORED

S = DeliveryState
E = DeliveryEvent
_ = IGNORED

_AGENT_REPORTS_LATE: dict[DeliveryEvent, DeliveryState | Ignored] = {
    # The run's result is already recorded: a re-sent or late report changes nothing.
    E.ACK: _, E.PROGRESS: _, E.FINISH: _, E.FAIL: _, E.SCHEDULE: _,
}
_DAEMON_TOO_LATE: dict[DeliveryEvent, DeliveryState | Ignored] = {
    # The delivery ended already: the daemon's timers and untasks that race it change nothing.
    E.UNACKED: _, E.RUN_DUE: _, E.POLL_TIMEOUT: _, E.TTL_END: _, E.UNTASK: _,
}

DELIVERY: Final[Mapping[DeliveryState, Mapping[DeliveryEvent, DeliveryState | Ignored]]] = {
    # Not before its time (a task's delay and jitter): on the timer wheel, never pushed yet,
    # so no agent can report on it; the ttl still bounds it.
    S.DELAYED: {
        E.UNACKED: _, E.RUN_DUE: S.QUEUED, E.POLL_TIMEOUT: _, E.TTL_END: S.EXPIRED, E.UNTASK: S.CANCELLED,
    },
    S.QUEUED: {
        E.ACK: S.ACKED, E.PROGRESS: S.RUNNING, E.FINISH: S.DONE, E.FAIL: S.FAILED, E.SCHEDULE: S.WAITING,
        E.UNACKED: S.SENT, E.RUN_DUE: _, E.POLL_TIMEOUT: S.FAILED, E.TTL_END: S.EXPIRED, E.UNTASK: S.CANCELLED,
    },
    S.SENT: {
        E.ACK: S.ACKED, E.PROGRESS: S.RUNNING, E.FINISH: S.DONE, E.FAIL: S.FAILED, E.SCHEDULE: S.WAITING,
        E.UNACKED: _, E.RUN_DUE: _, E.POLL_TIMEOUT: S.FAILED, E.TTL_END: S.EXPIRED, E.UNTASK: S.CANCELLED,
    },
    # Acknowledged: the ttl and a polling timeout no longer stop it; its result decides.
    S.ACKED: {
        E.ACK: _, E.PROGRESS: S.RUNNING, E.FINISH: S.DONE, E.FAIL: S.FAILED, E.SCHEDULE: S.WAITING,
        E.UNACKED: _, E.RUN_DUE: _, E.POLL_TIMEOUT: _, E.TTL_END: _, E.UNTASK: S.CANCELLED,
    },
    S.RUNNING: {
        E.ACK: _, E.PROGRESS: S.RUNNING, E.FINISH: S.DONE, E.FAIL: S.FAILED, E.SCHEDULE: S.WAITING,
        E.UNACKED: _, E.RUN_DUE: _, E.POLL_TIMEOUT: _, E.TTL_END: _, E.UNTASK: S.CANCELLED,
    },
    # The run's result is in; the next run is on the daemon's timer wheel, on no agent.
    S.WAITING: {
        **_AGENT_REPORTS_LATE,
        E.UNACKED: _, E.RUN_DUE: S.QUEUED, E.POLL_TIMEOUT: S.FAILED, E.TTL_END: S.EXPIRED, E.UNTASK: S.CANCELLED,
    },
    S.DONE: {**_AGENT_REPORTS_LATE, **_DAEMON_TOO_LATE},
    S.FAILED: {**_AGENT_REPORTS_LATE, **_DAEMON_TOO_LATE},
    # Ended by the daemon: the agent was told to drop it, so a report about it is refused.
    S.EXPIRED: _DAEMON_TOO_LATE,
    S.CANCELLED: _DAEMON_TOO_LATE,
}
"""Every delivery state and what each event makes of it. A pair not listed is an error
(:func:`next_state`)."""

del _, E, S

TERMINAL: Final = frozenset({DeliveryState.DONE, DeliveryState.FAILED, DeliveryState.EXPIRED,
                             DeliveryState.CANCELLED})
PENDING: Final = frozenset(DeliveryState) - TERMINAL
"""States in which a delivery can still run: untask cancels these."""
UNDELIVERED: Final = frozenset({DeliveryState.QUEUED, DeliveryState.SENT})
"""A run the agent has not acknowledged: the ttl and a polling timeout still stop it."""
UNHELD: Final = frozenset({DeliveryState.DELAYED, DeliveryState.WAITING})
"""A delivery no agent holds a run of (not pushed yet, or between two runs): when the daemon
ends it, no agent is told to drop anything."""
PUSHABLE: Final = frozenset({DeliveryState.QUEUED, DeliveryState.SENT, DeliveryState.ACKED,
                             DeliveryState.RUNNING})
"""What a session opening pushes (again): a run the agent may not hold. One it holds is
left out by its ``holding`` list; the journal deduplicates the rest."""
TTL_BOUND: Final = frozenset(s for s, row in DELIVERY.items() if isinstance(row.get(DeliveryEvent.TTL_END), DeliveryState))
"""States the ttl ends: a run not yet acknowledged, or a next run not yet due."""


_REPORTS: Final = {DeliveryEvent.ACK: "an ack", DeliveryEvent.PROGRESS: "a progress report",
                   DeliveryEvent.FINISH: "a result", DeliveryEvent.FAIL: "a result", DeliveryEvent.SCHEDULE: "a result"}


class IllegalTransition(RemoteProtocolError):
    """An agent reported on a delivery in a state that cannot take the report."""

    def __init__(self, delivery_id: int, old: DeliveryState, event: DeliveryEvent) -> None:
        super().__init__(
            ErrorCode.ILLEGAL_TRANSITION,
            f"delivery {delivery_id} is {old.value}; it cannot take {_REPORTS[event]}",
            ref=delivery_id,
        )
        self.old = old
        self.event = event


_BY_VALUE: Final[Mapping[str, DeliveryState]] = {s.value: s for s in DeliveryState}


def _delivery_state(state: DeliveryState | str) -> DeliveryState:
    """``DeliveryState(state)``, by a dict: it is asked once per report, on the daemon's hot path."""
    try:
        return _BY_VALUE[state]
    except KeyError:
        raise ValueError(f"{state!r} is not a valid DeliveryState") from None


def next_state(delivery_id: int, state: DeliveryState | str, event: DeliveryEvent) -> DeliveryState | Ignored:
    """What ``event`` makes of a delivery in ``state``: its new state (maybe the same one:
    progress while running), or :data:`IGNORED`. Raise if the table does not list the pair."""
    old = _delivery_state(state)
    decided = DELIVERY[old].get(event)
    if decided is not None:
        return decided
    if event.by_agent:
        raise IllegalTransition(delivery_id, old, event)
    raise LocalProtocolError(ErrorCode.INTERNAL, f"tetherd bug: delivery {delivery_id} is {old.value} and "
                                                 f"the daemon tried {event.value}", ref=delivery_id)


# -- decisions -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HistoryRow:
    """The history entry of a run that scheduled another (XSOAR's war-room entry)."""

    run: int
    at: float
    partial: bytes | None
    poll_message: str
    note: str
    next_run_at: float
    next_command: str
    next_args: bytes
    items_remaining: int = 0


CancelReason = Literal["cancelled", "expired"]
"""What a ``cancel`` frame tells the agent: the state the daemon ended its run in."""
UNTASKED: Final[CancelReason] = "cancelled"


class Decision(msgspec.Struct, frozen=True, gc=False):
    """What one event does to one delivery: the store writes ``columns`` (and ``state``,
    ``updated_at``) when :attr:`writes`, records ``history``, and the daemon sets the
    polling ``timer`` and tells the agent holding the run to drop it (``withdraw``). (A
    Struct: one is made per report on the daemon's hot path, and a frozen dataclass is
    three times as slow to make.)"""

    old: DeliveryState
    new: DeliveryState | None
    """None: ignored, nothing written (a report about it is still settled)."""
    event: DeliveryEvent
    columns: dict[str, Any] = {}
    history: HistoryRow | None = None
    timer: float | None = None
    """When to look at this delivery again (its next run, or the sequence's timeout)."""
    withdraw: CancelReason | None = None
    """The daemon ended a run the agent may hold: send it ``cancel`` with this reason."""

    @property
    def writes(self) -> bool:
        return self.new is not None

    @property
    def moves(self) -> bool:
        """The state changes (progress while running writes its text, not a new state)."""
        return self.new is not None and self.new != self.old


def _decide(delivery_id: int, state: DeliveryState | str, event: DeliveryEvent) -> tuple[DeliveryState,
                                                                                          DeliveryState | None]:
    old = _delivery_state(state)
    decided = DELIVERY[old].get(event)
    if decided is None:
        decided = next_state(delivery_id, old, event)  # raises: whose fault it is
    return old, (None if isinstance(decided, Ignored) else decided)


def _ignored(old: DeliveryState, event: DeliveryEvent) -> Decision:
    return Decision(old, None, event)


def mark_sent(delivery_id: int, state: DeliveryState | str, pushed_at: float) -> Decision:
    """A push still unacknowledged after a while (or when its session ended) is written as
    ``sent``, with when it was pushed. Only a queued one moves."""
    old, new = _decide(delivery_id, state, DeliveryEvent.UNACKED)
    if new is None:
        return _ignored(old, DeliveryEvent.UNACKED)
    return Decision(old, new, DeliveryEvent.UNACKED, {"sent_at": pushed_at})


def _ack_columns(old: DeliveryState, now: float, pushed_at: float | None) -> dict[str, Any]:
    """An ack writes when it came, and, for a push never written as ``sent``, when it was pushed."""
    if old is DeliveryState.QUEUED:
        return {"acked_at": now, "sent_at": now if pushed_at is None else pushed_at}
    if old is DeliveryState.SENT:
        return {"acked_at": now}
    return {}


def acknowledge(delivery_id: int, state: DeliveryState | str, now: float, pushed_at: float | None = None) -> Decision:
    """The agent journaled the run. ``pushed_at``: when its session pushed it (the push is
    written as ``sent`` only when no ack came soon: the ack then writes both)."""
    old, new = _decide(delivery_id, state, DeliveryEvent.ACK)
    if new is None:
        return _ignored(old, DeliveryEvent.ACK)
    return Decision(old, new, DeliveryEvent.ACK, _ack_columns(old, now, pushed_at))


def progress(delivery_id: int, state: DeliveryState | str, now: float, text: str) -> Decision:
    """The run started (its first report sets ``started_at``) or says how far it got."""
    old, new = _decide(delivery_id, state, DeliveryEvent.PROGRESS)
    if new is None:
        return _ignored(old, DeliveryEvent.PROGRESS)
    columns: dict[str, Any] = {"progress": text}
    if old is not DeliveryState.RUNNING:
        columns["started_at"] = now
    return Decision(old, new, DeliveryEvent.PROGRESS, columns)


class RunReport(Protocol):
    """A run's result, as the agent reported it (its times 0 when it could not give them):
    :class:`RunResult`, or a store's own record of it (no copy is made per report)."""

    @property
    def ok(self) -> bool: ...
    @property
    def output(self) -> bytes: ...
    @property
    def error(self) -> str: ...
    @property
    def started_at(self) -> float: ...
    @property
    def finished_at(self) -> float: ...


class RunResult(msgspec.Struct, frozen=True, kw_only=True):
    """A :class:`RunReport` of its own."""

    ok: bool
    output: bytes
    error: str = ""
    started_at: float = 0.0
    finished_at: float = 0.0


def finish(delivery_id: int, state: DeliveryState | str, now: float, result: RunReport, *,
           acked_with: float | None = None, with_ack: bool = False) -> Decision:
    """The run's result ends the delivery (``done`` or ``failed``). ``with_ack``: the run's
    ack came in the same message and is written here too (``acked_with``: when it was pushed)."""
    event = DeliveryEvent.FINISH if result.ok else DeliveryEvent.FAIL
    old, new = _decide(delivery_id, state, event)
    if new is None:
        return _ignored(old, event)
    columns: dict[str, Any] = {
        "result": result.output, "error": result.error, "started_at": result.started_at or None,
        "finished_at": result.finished_at or now, "ended_by": "agent",
    }
    if with_ack:
        columns.update(_ack_columns(old, now, acked_with))
    return Decision(old, new, event, columns)


@dataclass(frozen=True, slots=True)
class WaitPlan:
    """A run's schedule, already checked against the polling rules (``protocol.polling``)."""

    command: str
    args: bytes
    interval: float
    timeout: float
    note: str = ""
    poll_message: str = ""
    items_remaining: int = 0


@dataclass(frozen=True, slots=True)
class PollSequence:
    """Where a delivery's polling sequence stands: its deadline once its first run scheduled
    another (``None`` before), and the task's expiry."""

    poll_deadline: float | None
    expires_at: float


def _wait(now: float, run: int, result: RunReport, plan: WaitPlan, sequence: PollSequence) -> tuple[
        dict[str, Any], HistoryRow, float]:
    """The columns, history entry and timer of a run that asked for the next: it runs
    ``plan.interval`` from now; the first schedule starts the sequence's timeout; the timer
    is the earliest of the next run, the timeout and the ttl (past the ttl the next run
    cannot be delivered: :func:`poll_due` then ends it as expired)."""
    finished_at = result.finished_at or now
    next_run_at = now + plan.interval
    columns: dict[str, Any] = {"command": plan.command, "args": plan.args, "next_run_at": next_run_at,
                               "started_at": result.started_at or None, "finished_at": finished_at}
    deadline = sequence.poll_deadline
    if deadline is None:
        deadline = now + plan.timeout
        columns.update(poll_deadline=deadline, poll_timeout=plan.timeout)
    history = HistoryRow(
        run=run, at=finished_at, partial=None if result.output == _NIL else result.output,
        poll_message=plan.poll_message, note=plan.note, next_run_at=next_run_at, next_command=plan.command,
        next_args=plan.args, items_remaining=plan.items_remaining,
    )
    return columns, history, min(next_run_at, deadline, sequence.expires_at)


_NIL = b"\xc0"


def schedule(delivery_id: int, state: DeliveryState | str, run: int, now: float, result: RunReport,
             plan: WaitPlan, sequence: PollSequence, *, acked_with: float | None = None,
             with_ack: bool = False) -> Decision:
    """The run's result asks for a next run: the delivery waits for it on the timer wheel
    (its output is the run's partial result, in the history entry)."""
    old, new = _decide(delivery_id, state, DeliveryEvent.SCHEDULE)
    if new is None:
        return _ignored(old, DeliveryEvent.SCHEDULE)
    columns, history, timer = _wait(now, run, result, plan, sequence)
    if with_ack:
        columns.update(_ack_columns(old, now, acked_with))
    return Decision(old, new, DeliveryEvent.SCHEDULE, columns, history, timer)


def start_sequel(now: float, result: RunReport, plan: WaitPlan, expires_at: float) -> tuple[
        dict[str, Any], HistoryRow, float]:
    """A further polling sequence one run started (a list of results, several with a
    schedule): a delivery of its own, born ``waiting`` for its run 2. Its columns, its first
    history entry and its timer."""
    columns, history, timer = _wait(now, 1, result, plan, PollSequence(None, expires_at))
    return columns, history, timer


SEQUEL_STATE: Final = DeliveryState.WAITING
"""The state a sequel's delivery is born in."""
BORN: Final = DeliveryState.QUEUED
"""The state every other delivery is born in, but one not due yet (:func:`born`)."""


def born(not_before: float, now: float) -> DeliveryState:
    """The state a new delivery is born in: ``delayed`` until ``not_before`` (its task's delay
    plus its own jitter) when that is still to come, else :data:`BORN`."""
    return DeliveryState.DELAYED if not_before > now else BORN


@dataclass(frozen=True, slots=True)
class PollFacts:
    """What a polling timer needs to know about its delivery."""

    state: DeliveryState
    run: int
    next_run_at: float | None
    poll_deadline: float
    poll_timeout: float
    expires_at: float


def poll_due(delivery_id: int, facts: PollFacts, now: float) -> Decision:
    """A polling timer fired: queue the next run if it is due; end the sequence at its
    timeout (the daemon's own error entry, as XSOAR does) or, for a next run not yet due
    or not yet acknowledged, at the task's ttl; or look again later."""
    state = facts.state
    if state is DeliveryState.DELAYED:
        return _not_before_due(delivery_id, facts, now)
    undelivered = state in UNDELIVERED and facts.run > 1
    if state is not DeliveryState.WAITING and not undelivered:
        return _ignored(state, DeliveryEvent.RUN_DUE)  # acked or running (its result decides), or over
    if now >= facts.poll_deadline:
        return end_by_daemon(delivery_id, state, DeliveryEvent.POLL_TIMEOUT, now, timeout_error(facts.poll_timeout))
    if undelivered:
        return Decision(state, None, DeliveryEvent.RUN_DUE, timer=facts.poll_deadline)
    if now >= facts.expires_at:
        return end_by_daemon(delivery_id, state, DeliveryEvent.TTL_END, now,
                             f"the task's ttl ended before run {facts.run + 1} was due")
    assert facts.next_run_at is not None
    if now < facts.next_run_at:  # woken early: look again then
        return Decision(state, None, DeliveryEvent.RUN_DUE, timer=min(facts.next_run_at, facts.poll_deadline))
    old, new = _decide(delivery_id, state, DeliveryEvent.RUN_DUE)
    # The delivery's times are its current run's; each run's own are in its history entry.
    return Decision(old, new, DeliveryEvent.RUN_DUE, {
        "run": facts.run + 1, "sent_at": None, "acked_at": None, "started_at": None, "finished_at": None,
        "progress": "", "next_run_at": None,
    }, timer=facts.poll_deadline)


def _not_before_due(delivery_id: int, facts: PollFacts, now: float) -> Decision:
    """A delayed delivery's timer fired: queue it once its time came (its run stays 1), end it
    as expired if the ttl ended first, or look again at its time."""
    if now >= facts.expires_at:
        return end_by_daemon(delivery_id, facts.state, DeliveryEvent.TTL_END, now, TTL_ENDED)
    assert facts.next_run_at is not None
    if now < facts.next_run_at:
        return Decision(facts.state, None, DeliveryEvent.RUN_DUE, timer=min(facts.next_run_at, facts.expires_at))
    old, new = _decide(delivery_id, facts.state, DeliveryEvent.RUN_DUE)
    return Decision(old, new, DeliveryEvent.RUN_DUE, {"next_run_at": None})


def cancel_reason(ended: DeliveryState | str) -> CancelReason:
    """What the ``cancel`` frame says to an agent holding a run the daemon ended."""
    return UNTASKED if ended == DeliveryState.CANCELLED else "expired"


TTL_ENDED: Final = "the task's ttl ended"
"""The error of a delivery the ttl ended."""


def end_by_daemon(delivery_id: int, state: DeliveryState | str, event: DeliveryEvent, now: float,
                  error: str = "") -> Decision:
    """The daemon ends a delivery (its ttl, an untask, a polling timeout): its error entry
    says why, ``by`` is the daemon, and an agent that may hold the run is told to drop it (a
    waiting delivery's last run is over: nothing to drop)."""
    old, new = _decide(delivery_id, state, event)
    if new is None:
        return _ignored(old, event)
    withdraw = None if old in UNHELD else cancel_reason(new)
    return Decision(old, new, event, {"error": error, "finished_at": now, "ended_by": "daemon"}, withdraw=withdraw)


# -- which report is about which run -------------------------------------------------------


class RunCheck(enum.Enum):
    APPLY = "apply"
    """About the delivery's current run: decide it."""
    SETTLED = "settled"
    """About an earlier run, recorded before the next was queued: nothing to do but confirm."""


def check_run(delivery_id: int, reported: int, current: int) -> RunCheck:
    """Which run an agent's report is about, against the delivery's current run; a run
    the daemon never sent is the peer's error."""
    if reported > current:
        raise RemoteProtocolError(ErrorCode.ILLEGAL_TRANSITION,
                                  f"delivery {delivery_id} is on run {current}; run {reported} was never sent",
                                  ref=delivery_id)
    return RunCheck.APPLY if reported == current else RunCheck.SETTLED


# -- what a person sees --------------------------------------------------------------------


class _Entry(Protocol):
    @property
    def state(self) -> str: ...
    @property
    def partial_result(self) -> Any: ...


EntryT = TypeVar("EntryT", bound=_Entry)


def shown_history(entries: Sequence[EntryT], *, hide: bool) -> tuple[list[EntryT], int]:
    """The history entries shown, and how many were hidden. With ``hide`` (the default, as
    in XSOAR), the scheduled entries after the first that carry no partial result are left out."""
    if not hide:
        return list(entries), 0
    kept = [e for i, e in enumerate(entries)
            if i == 0 or e.state != DeliveryState.WAITING or e.partial_result is not None]
    return kept, len(entries) - len(kept)


class TaskState(enum.StrEnum):
    """Where a task is: it reaches agents that come to match its target while ``active``."""

    ACTIVE = "active"
    CLOSED = "closed"
    """Its ttl ended."""
    CANCELLED = "cancelled"


class TaskEvent(enum.Enum):
    TTL_END = "ttl_end"
    UNTASK = "untask"


TASK: Final[Mapping[TaskState, Mapping[TaskEvent, TaskState | Ignored]]] = {
    TaskState.ACTIVE: {TaskEvent.TTL_END: TaskState.CLOSED, TaskEvent.UNTASK: TaskState.CANCELLED},
    TaskState.CLOSED: {TaskEvent.TTL_END: IGNORED, TaskEvent.UNTASK: IGNORED},
    TaskState.CANCELLED: {TaskEvent.TTL_END: IGNORED, TaskEvent.UNTASK: IGNORED},
}
"""Every task state and what each event makes of it."""


def task_next(state: TaskState | str, event: TaskEvent) -> TaskState | Ignored:
    return TASK[TaskState(state)][event]


def task_reads_as(stored: TaskState | str, one_agent: bool, deliveries: Iterable[DeliveryState | str], *,
                  ttl_ended: bool = False) -> str:
    """How a task reads to a person. A task for a tag, a selector or all agents reads as
    its state (``active``: it still reaches new agents; ``closed`` once ``ttl_ended``, even
    before its timer marked it: a task for one agent whose delivery ended holds none). A
    task for one agent whose deliveries (its own and its polling sequels') have all ended
    reads as how they ended -- ``done``, else the first of ``failed``, ``expired``,
    ``cancelled`` -- as ``wait`` sees it."""
    states = [DeliveryState(d) for d in deliveries]
    if not one_agent or not states or not all(d.terminal for d in states):
        task = TaskState(stored)
        if ttl_ended:
            ended = task_next(task, TaskEvent.TTL_END)
            task = task if isinstance(ended, Ignored) else ended
        return task.value
    for end in (DeliveryState.FAILED, DeliveryState.EXPIRED, DeliveryState.CANCELLED):
        if end in states:
            return end.value
    return DeliveryState.DONE.value


# -- the agent's journal -------------------------------------------------------------------


class RunState(enum.StrEnum):
    """Where one run of a delivery is in the agent's journal."""

    PENDING = "pending"
    """Journaled (and acknowledged): it will run."""
    RUNNING = "running"
    """Claimed: its handler runs (found so after a crash: it failed, never runs again)."""
    FINISHED = "finished"
    """Its result is in the outbox (until the daemon confirms it)."""
    CANCELLED = "cancelled"
    """The daemon cancelled it: it never runs (again)."""


class RunEvent(enum.Enum):
    CLAIM = "claim"
    FINISH = "finish"
    CANCEL = "cancel"
    RECOVER = "recover"
    """The journal is opened after the agent stopped without finishing the run."""


RUN: Final[Mapping[RunState, Mapping[RunEvent, RunState | Ignored]]] = {
    RunState.PENDING: {RunEvent.CLAIM: RunState.RUNNING, RunEvent.CANCEL: RunState.CANCELLED,
                       RunEvent.RECOVER: IGNORED},
    RunState.RUNNING: {RunEvent.FINISH: RunState.FINISHED, RunEvent.CANCEL: RunState.CANCELLED,
                       RunEvent.RECOVER: RunState.FINISHED},
    RunState.FINISHED: {RunEvent.CANCEL: IGNORED, RunEvent.RECOVER: IGNORED},
    RunState.CANCELLED: {RunEvent.CLAIM: IGNORED, RunEvent.FINISH: IGNORED, RunEvent.CANCEL: IGNORED,
                         RunEvent.RECOVER: IGNORED},
}
"""Every journal run state and what each event makes of it; a pair not listed is a bug in
the agent (:func:`run_next` raises)."""

OPEN_RUNS: Final = frozenset({RunState.PENDING, RunState.RUNNING})
"""Runs that may still run: a cancel stops these."""


def run_next(state: RunState | str, event: RunEvent) -> RunState | Ignored:
    old = RunState(state)
    decided = RUN[old].get(event)
    if decided is None:
        raise LocalProtocolError(ErrorCode.INTERNAL, f"tether-agent bug: a {old.value} run cannot {event.value}")
    return decided


# -- for the stores -------------------------------------------------------------------------

StateT = TypeVar("StateT", DeliveryState, TaskState, RunState)
EventT = TypeVar("EventT", DeliveryEvent, TaskEvent, RunEvent)


def moves(table: Mapping[StateT, Mapping[EventT, StateT | Ignored]], event: EventT) -> tuple[
        frozenset[StateT], StateT]:
    """The states ``event`` moves to another in ``table``, and the one state it moves them
    to: what a store's ``UPDATE ... WHERE state IN (...)`` applies it to. (An event whose
    moves end in different states has no such one statement: ``ValueError``.)"""
    moved = {old: new for old, row in table.items()
             if not isinstance(new := row.get(event, IGNORED), Ignored) and new != old}
    targets = set(moved.values())
    if len(targets) != 1:
        raise ValueError(f"{event} moves to {sorted(targets)}, not to one state")
    return frozenset(moved), targets.pop()


FILTERS: Final = ("pending", "all")
"""What a listing of deliveries may ask for besides one state: the unfinished ones (the
default) or all of them."""
_LISTED: Final[Mapping[str, frozenset[DeliveryState]]] = {
    FILTERS[0]: PENDING, FILTERS[1]: frozenset(DeliveryState), **{s.value: frozenset({s}) for s in DeliveryState}}


def listed(name: str | None) -> frozenset[DeliveryState]:
    """The delivery states a listing asks for by ``name`` (None: the default, ``pending``)."""
    states = _LISTED.get(FILTERS[0] if name is None else name)
    if states is None:
        raise ProtocolError(ErrorCode.INVALID_PARAMS, f"unknown state {name!r} (use one of: {', '.join(_LISTED)})")
    return states


def sql_in(states: Iterable[enum.StrEnum]) -> str:
    """States as an SQL list of literals, ``('queued','sent')``, sorted: for a store's
    queries, so that no state name is spelt in SQL by hand."""
    return "(" + ",".join(f"'{s.value}'" for s in sorted(states, key=lambda s: s.value)) + ")"


def sql_value(state: enum.StrEnum) -> str:
    """One state as an SQL literal, ``'active'``: for a query that must match a partial
    index's ``WHERE state = 'active'`` (SQLite does not see ``IN ('active')`` imply it)."""
    return f"'{state.value}'"
