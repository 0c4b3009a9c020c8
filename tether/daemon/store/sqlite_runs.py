"""Runs of deliveries in the SQLite store: what agents report, and what polling timers do.

A delivery runs once, or, for a polling command (Cortex XSOAR "Scheduled Commands"),
again and again: a run's result with a plan makes the delivery ``waiting`` (history entry
written, its next run and the sequence's deadline recorded) and the broker puts a timer
on the wheel; :meth:`SQLiteRuns.poll_due` then queues run + 1, or ends the sequence at its
timeout with the daemon's own error entry. Reports name ``(delivery_id, run)``: one about
an earlier run than the delivery's current one was already recorded, and only settles.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, NamedTuple

from ...protocol.errors import ErrorCode
from ...protocol.states import DeliveryState, IllegalTransition
from . import Change, Outcome, PollOutcome, PushItem, Ref, Refusal, ResultIn, RunPlan
from .writer import MAX_ID, Op, Tx, chunks

S = DeliveryState


class _Row(NamedTuple):
    state: str
    agent_id: str
    task_id: int
    run: int
    poll_deadline: float | None


Apply = Callable[[Tx, int, _Row, list[tuple[int, float]]], Change | None]
"""One report on one run: the change it made (None: nothing to change). It may add
``(delivery_id, when)`` timers for the broker to put on the wheel."""

_NIL = b"\xc0"


def timeout_error(timeout: float) -> str:
    """The daemon's own error entry when a polling sequence times out (XSOAR)."""
    return f"polling timed out after {timeout:g} s"


def ack_sql(n: int) -> str:
    """The usual ack of ``n`` runs (queued, this agent's, on that run), as one statement
    that says which it moved. The "+" keeps SQLite on the primary key: with the agent and
    the state bound, it would otherwise walk that agent's whole queue in deliveries_pending."""
    return ("UPDATE deliveries SET state = 'acked', updated_at = ?, acked_at = ?, sent_at = ?"
            f" WHERE id IN ({','.join('?' * n)}) AND +agent_id = ? AND run = ? AND +state = 'queued'"
            " RETURNING id, task_id")


def _history(tx: Tx, d_id: int, run: int, at: float, output: bytes, plan: RunPlan, next_run_at: float) -> None:
    """The history entry of a run that scheduled the next one (XSOAR's war-room entry)."""
    tx.execute(
        "INSERT INTO history (delivery_id, run, at, partial, poll_message, note, next_run_at, next_command,"
        " next_args, items_remaining) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (d_id, run, at, None if output == _NIL else output, plan.poll_message, plan.note, next_run_at, plan.command,
         plan.args, plan.items_remaining),
    )


def _sequel(tx: Tx, agent_id: str, parent: Any, plan: RunPlan, partial: bytes, started_at: float | None,
            finished_at: float, now: float, timers: list[tuple[int, float]]) -> tuple[int, float]:
    """A further polling sequence started by a run: a task of its own for the same agent,
    whose delivery waits for its run 2 as the run's own does; shown, waited for and
    cancelled with the task that started it (``parent_id``, the first task of the family).
    Returns its id and expiry, for the ttl timer."""
    expires_at, priority, hide, root = parent
    task_id = tx.execute(
        "INSERT INTO tasks (command, args, target_kind, target, priority, ttl, created_at, expires_at,"
        " hide_polling_output, parent_id) VALUES (?, ?, 'agent', ?, ?, ?, ?, ?, ?, ?)",
        (plan.command, plan.args, agent_id, priority, max(1, round(expires_at - now)), now, expires_at, hide, root),
    ).lastrowid
    next_run_at = now + plan.interval
    d_id = tx.execute(
        "INSERT INTO deliveries (task_id, agent_id, state, priority, updated_at, started_at, finished_at, next_run_at,"
        " poll_deadline, poll_timeout) VALUES (?, ?, 'waiting', ?, ?, ?, ?, ?, ?, ?)",
        (task_id, agent_id, priority, now, started_at, finished_at, next_run_at, now + plan.timeout, plan.timeout),
    ).lastrowid
    assert task_id is not None and d_id is not None
    tx.entered["waiting"] += 1
    _history(tx, d_id, 1, finished_at, partial, plan, next_run_at)
    timers.append((d_id, min(next_run_at, now + plan.timeout, expires_at)))
    return task_id, expires_at


def checked(tx: Tx, agent_id: str, refs: list[Ref], apply: Apply) -> Outcome:
    """Apply reports on runs an agent names, each checked first: the delivery exists, is
    the agent's, and is on that run (an earlier run was recorded before the next was queued)."""
    changes: list[Change] = []
    settled: list[Ref] = []
    refused: list[Refusal] = []
    timers: list[tuple[int, float]] = []
    unique = list(dict.fromkeys(refs))
    ids = list(dict.fromkeys(d for d, _ in unique if 0 <= d <= MAX_ID))
    rows = {
        r[0]: _Row(*r[1:])
        for chunk in chunks(ids)
        for r in tx.execute(
            "SELECT id, state, agent_id, task_id, run, poll_deadline FROM deliveries"
            f" WHERE id IN ({','.join('?' * len(chunk))})",
            chunk,
        )
    }
    for d_id, run in unique:
        row = rows.get(d_id)
        if row is None:
            refused.append(Refusal(d_id, ErrorCode.UNKNOWN_DELIVERY, f"no delivery {d_id}"))
            continue
        if row.agent_id != agent_id:
            refused.append(Refusal(d_id, ErrorCode.FORBIDDEN, f"delivery {d_id} belongs to another agent"))
            continue
        if run > row.run:
            refused.append(Refusal(d_id, ErrorCode.ILLEGAL_TRANSITION,
                                   f"delivery {d_id} is on run {row.run}; run {run} was never sent"))
            continue
        if run < row.run:
            settled.append((d_id, run))  # about an earlier run: recorded before the next was queued
            continue
        try:
            change = apply(tx, d_id, row, timers)
        except IllegalTransition as exc:
            refused.append(Refusal(d_id, exc.code, exc.message))
            continue
        settled.append((d_id, run))
        if change is not None:
            changes.append(change)
    tx.flush_moves()
    return Outcome(changes, settled, refused, timers)


class SQLiteRuns:
    """Mixed into :class:`~.sqlite.SQLiteStore`, which provides ``_submit``."""

    _submit: Callable[[Op], asyncio.Future[Any]]

    def _agent_op(self, agent_id: str, refs: list[Ref], apply: Apply) -> Op:
        """An operation over runs an agent reports on, checking ownership and run first."""
        return lambda tx: checked(tx, agent_id, refs, apply)

    def acknowledge(self, agent_id: str, refs: list[Ref], now: float,
                    sent_at: dict[int, float] | None = None) -> asyncio.Future[Outcome]:
        """``queued | sent -> acked``. ``sent_at``: when the session pushed each delivery, for
        those it never marked ``sent`` (it marks only pushes not acknowledged within
        ``SENT_MARK_DELAY``, so a quick ack writes one state change, not two)."""
        pushed = sent_at or {}

        def apply(tx: Tx, d_id: int, row: _Row, timers: list[tuple[int, float]]) -> Change | None:
            if row.state in ("acked", "running", "waiting", "done", "failed"):
                return None  # a repeated ack after a re-push: already past this point
            if row.state == "queued":
                tx.move_later(d_id, row.state, S.ACKED, now, acked_at=now, sent_at=pushed.get(d_id, now))
            else:
                tx.move_later(d_id, row.state, S.ACKED, now, acked_at=now)
            return Change(d_id, row.task_id, agent_id, row.state, "acked")

        def op(tx: Tx) -> Outcome:
            # The usual ack (queued, this agent's, the run it is on) is one UPDATE per burst,
            # with no read first; anything else takes the checked path below.
            unique = list(dict.fromkeys(refs))
            groups: dict[tuple[int, float], list[int]] = {}
            for d_id, run in unique:
                if 0 <= d_id <= MAX_ID and 0 <= run <= MAX_ID:
                    groups.setdefault((run, pushed.get(d_id, now)), []).append(d_id)
            changes: list[Change] = []
            settled: list[Ref] = []
            for (run, at), ids in groups.items():
                for chunk in chunks(ids):
                    for d_id, task_id in tx.execute(ack_sql(len(chunk)), (now, now, at, *chunk, agent_id, run)):
                        changes.append(Change(d_id, task_id, agent_id, "queued", "acked"))
                        settled.append((d_id, run))
            tx.entered["acked"] += len(changes)
            if len(settled) == len(unique):
                return Outcome(changes, settled, [], [])
            done = set(settled)
            rest = checked(tx, agent_id, [ref for ref in unique if ref not in done], apply)
            return Outcome(changes + rest.changes, settled + rest.settled, rest.refused, rest.timers)

        return self._submit(op)

    def started(self, agent_id: str, ref: Ref, message: str, now: float) -> asyncio.Future[Outcome]:
        return self.started_many(agent_id, [(ref, message)], now)

    def started_many(self, agent_id: str, reports: list[tuple[Ref, str]], now: float) -> asyncio.Future[Outcome]:
        """Progress reports: the first of a run makes it ``running``; later ones update its text."""
        messages = dict(reports)  # a run reported on twice in one message keeps the last text

        def apply(tx: Tx, d_id: int, row: _Row, timers: list[tuple[int, float]]) -> Change | None:
            message = messages[d_id, row.run]
            if row.state == "running":
                tx.execute("UPDATE deliveries SET progress = ?, updated_at = ? WHERE id = ?", (message, now, d_id))
                return None
            if row.state in ("waiting", "done", "failed"):
                return None  # late: the run's result is already recorded
            tx.move_later(d_id, row.state, S.RUNNING, now, started_at=now, progress=message)
            return Change(d_id, row.task_id, agent_id, row.state, "running")

        return self._submit(self._agent_op(agent_id, list(messages), apply))

    def record_results(self, agent_id: str, results: list[ResultIn], now: float,
                       acked: dict[int, float] | None = None) -> asyncio.Future[Outcome]:
        by_ref = {(r.delivery_id, r.run): r for r in results}
        pushed = acked or {}
        sequels: list[tuple[int, float]] = []

        def apply(tx: Tx, d_id: int, row: _Row, timers: list[tuple[int, float]]) -> Change | None:
            if row.state in ("waiting", "done", "failed"):
                return None  # re-sent from the agent's outbox: this run is already recorded
            r = by_ref[d_id, row.run]
            started_at, finished_at = r.started_at or None, r.finished_at or now
            ack: dict[str, float] = {}
            if d_id in pushed and row.state in ("queued", "sent"):  # its ack came with it: written here
                ack = {"acked_at": now, "sent_at": pushed[d_id]} if row.state == "queued" else {"acked_at": now}
            plan = r.plan if r.ok else None
            if plan is None:
                new = S.DONE if r.ok else S.FAILED
                tx.move_later(d_id, row.state, new, now, result=r.output, error=r.error, started_at=started_at,
                              finished_at=finished_at, ended_by="agent", **ack)
                return Change(d_id, row.task_id, agent_id, row.state, new.value)
            state = row.state
            if state != "running":  # the ack or start was lost in a crash; the result is the authority
                tx.move(d_id, state, S.RUNNING, now, **ack)
                state = "running"
            next_run_at = now + plan.interval
            sequence: dict[str, Any] = {}
            if row.poll_deadline is None:  # the first schedule starts the sequence's timeout
                sequence = {"poll_deadline": now + plan.timeout, "poll_timeout": plan.timeout}
            deadline = row.poll_deadline if row.poll_deadline is not None else now + plan.timeout
            tx.move(d_id, state, S.WAITING, now, command=plan.command, args=plan.args, next_run_at=next_run_at,
                    started_at=started_at, finished_at=finished_at, **sequence)
            _history(tx, d_id, row.run, finished_at, r.output, plan, next_run_at)
            # Past the ttl (the run was acknowledged before it ended) the next run cannot be
            # delivered: look at it at once, and poll_due ends it as expired.
            task = tx.one("SELECT expires_at, priority, hide_polling_output, COALESCE(parent_id, id) FROM tasks"
                          " WHERE id = ?", (row.task_id,))
            timers.append((d_id, min(next_run_at, deadline, task[0])))
            for sequel, partial in r.sequels:
                sequels.append(_sequel(tx, agent_id, task, sequel, partial, started_at, finished_at, now, timers))
            return Change(d_id, row.task_id, agent_id, row.state, "waiting")

        def op(tx: Tx) -> Outcome:
            sequels.clear()  # the operation may run twice (its group was retried)
            outcome = checked(tx, agent_id, list(by_ref), apply)
            return Outcome(outcome.changes, outcome.settled, outcome.refused, outcome.timers, list(sequels))

        return self._submit(op)

    def poll_due(self, delivery_id: int, now: float) -> asyncio.Future[PollOutcome]:
        def op(tx: Tx) -> PollOutcome:
            row = tx.one(
                "SELECT d.state, d.run, d.next_run_at, d.poll_deadline, d.poll_timeout, d.agent_id, d.task_id,"
                " t.expires_at, COALESCE(d.command, t.command), COALESCE(d.args, t.args), d.priority"
                " FROM deliveries d JOIN tasks t ON t.id = d.task_id WHERE d.id = ?",
                (delivery_id,),
            )
            if row is None or row[3] is None:
                return PollOutcome([], [], None)
            state, run, next_run_at, deadline, timeout, agent_id, task_id, expires_at, command, args, priority = row
            undelivered = state in ("queued", "sent") and run > 1
            if state != "waiting" and not undelivered:
                return PollOutcome([], [], None)  # acked or running (its result decides), or over

            def end(new: DeliveryState, error: str) -> PollOutcome:
                tx.move(delivery_id, state, new, now, error=error, finished_at=now, ended_by="daemon")
                return PollOutcome([Change(delivery_id, task_id, agent_id, state, new.value)], [], None)

            if now >= deadline:
                return end(S.FAILED, timeout_error(timeout))
            if undelivered:
                return PollOutcome([], [], deadline)
            if now >= expires_at:
                return end(S.EXPIRED, f"the task's ttl ended before run {run + 1} was due")
            if now < next_run_at:
                return PollOutcome([], [], min(next_run_at, deadline))  # woken early: look again then
            # The delivery's times are its current run's; each run's own are in the history.
            tx.move(delivery_id, state, S.QUEUED, now, run=run + 1, sent_at=None, acked_at=None, started_at=None,
                    finished_at=None, progress="", next_run_at=None)
            item = PushItem(delivery_id, task_id, agent_id, command, args, priority, expires_at, run + 1, deadline,
                            timeout)
            return PollOutcome([Change(delivery_id, task_id, agent_id, state, "queued")], [item], deadline)

        return self._submit(op)
