"""Runs of deliveries in the SQLite store: what agents report, and what polling timers do.

A delivery runs once, or, for a polling command (Cortex XSOAR "Scheduled Commands"),
again and again: a run's result with a plan makes the delivery ``waiting`` (history entry
written, its next run and the sequence's deadline recorded) and its effects put a timer
on the wheel; :meth:`SQLiteRuns.poll_due` then queues run + 1, or ends the sequence at its
timeout with the daemon's own error entry. Reports name ``(delivery_id, run)``: one about
an earlier run than the delivery's current one was already recorded, and only settles.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, NamedTuple

from ...protocol import lifecycle
from ...protocol.errors import ErrorCode, RemoteProtocolError
from ...protocol.lifecycle import (
    Decision,
    DeliveryEvent,
    DeliveryState,
    PollFacts,
    PollSequence,
    RunCheck,
    RunResult,
    WaitPlan,
)
from ..effects import Change, Effects, Progressed, PushItem, Ref, Refusal, Timer
from . import ResultIn
from .rules import MAX_ID
from .writer import Op, Tx, batch_sql, chunks


class _Row(NamedTuple):
    state: str
    agent_id: str
    task_id: int
    run: int
    poll_deadline: float | None


Decide = Callable[[Tx, int, _Row, Effects[None]], Decision]
"""What one report on one run decides (:mod:`tether.protocol.lifecycle`). It may write what
goes with the decision (a sequel) and add its effects (timers)."""

ACK_WHERE = " AND +agent_id = ? AND run = ?"
"""The usual ack's rows: the reporting agent's, on the run it acknowledges."""


def ack_sql(n: int) -> str:
    """The usual ack of ``n`` runs (queued, this agent's, on that run), as one statement
    that says which it moved (:func:`~.writer.batch_sql`)."""
    usual = lifecycle.acknowledge(0, lifecycle.BORN, 0.0, 0.0)
    return batch_sql(tuple(usual.columns), n, ACK_WHERE)


def _run_result(r: ResultIn, output: bytes) -> RunResult:
    """A run's result with another output (a further sequence's partial result)."""
    return RunResult(ok=r.ok, output=output, error=r.error, started_at=r.started_at, finished_at=r.finished_at)


def _sequel(tx: Tx, agent_id: str, parent: Any, plan: WaitPlan, partial: bytes, r: ResultIn, now: float,
            effects: Effects[None]) -> None:
    """A further polling sequence started by a run: a task of its own for the same agent,
    whose delivery waits for its run 2 as the run's own does; shown, waited for and
    cancelled with the task that started it (``parent_id``, the first task of the family)."""
    expires_at, priority, hide, root = parent
    task_id = tx.execute(
        "INSERT INTO tasks (command, args, target_kind, target, priority, ttl, created_at, expires_at,"
        " hide_polling_output, parent_id) VALUES (?, ?, 'agent', ?, ?, ?, ?, ?, ?, ?)",
        (plan.command, plan.args, agent_id, priority, max(1, round(expires_at - now)), now, expires_at, hide, root),
    ).lastrowid
    columns, history, timer = lifecycle.start_sequel(now, _run_result(r, partial), plan, expires_at)
    d_id = tx.execute(
        f"INSERT INTO deliveries (task_id, agent_id, state, priority, updated_at, {', '.join(columns)})"
        f" VALUES (?, ?, ?, ?, ?{', ?' * len(columns)})",
        (task_id, agent_id, lifecycle.SEQUEL_STATE.value, priority, now, *columns.values()),
    ).lastrowid
    assert task_id is not None and d_id is not None
    tx.born(lifecycle.SEQUEL_STATE, 1)
    tx.history(d_id, history)
    effects.timers += [(Timer.POLL, d_id, timer), (Timer.EXPIRE_ONE, task_id, expires_at)]


def checked(tx: Tx, agent_id: str, refs: list[Ref], decide: Decide, now: float,
            effects: Effects[None] | None = None) -> Effects[None]:
    """Apply reports on runs an agent names, each checked first: the delivery exists, is
    the agent's, and is on that run (an earlier run was recorded before the next was
    queued); then what the lifecycle decides is written (an illegal one is refused)."""
    effects = Effects(None) if effects is None else effects
    changes, settled, refused = effects.changes, effects.settled, effects.refused
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
        try:
            if lifecycle.check_run(d_id, run, row.run) is RunCheck.SETTLED:
                settled.append((d_id, run))  # about an earlier run: recorded before the next was queued
                continue
            decision = decide(tx, d_id, row, effects)
        except RemoteProtocolError as exc:
            refused.append(Refusal(d_id, exc.code, exc.message))
            continue
        settled.append((d_id, run))
        if decision.history is None:
            tx.apply_later(d_id, decision, now)
        else:
            tx.apply(d_id, decision, now)
        if decision.moves:
            assert decision.new is not None
            changes.append(Change(d_id, row.task_id, agent_id, decision.old, decision.new))
    tx.flush()
    return effects


class SQLiteRuns:
    """Mixed into :class:`~.sqlite.SQLiteStore`, which provides ``_submit``."""

    _submit: Callable[[Op], asyncio.Future[Any]]

    def acknowledge(self, agent_id: str, refs: list[Ref], now: float,
                    sent_at: dict[int, float] | None = None) -> asyncio.Future[Effects[None]]:
        """``queued | sent -> acked``. ``sent_at``: when the session pushed each delivery, for
        those it never marked ``sent`` (it marks only pushes not acknowledged within
        ``SENT_MARK_DELAY``, so a quick ack writes one state change, not two)."""
        pushed = sent_at or {}

        def decide(tx: Tx, d_id: int, row: _Row, effects: Effects[None]) -> Decision:
            return lifecycle.acknowledge(d_id, row.state, now, pushed.get(d_id))

        def op(tx: Tx) -> Effects[None]:
            # The usual ack (queued, this agent's, the run it is on) is one UPDATE per burst,
            # with no read first; anything else takes the checked path below.
            unique = list(dict.fromkeys(refs))
            groups: dict[tuple[int, float], list[int]] = {}
            for d_id, run in unique:
                if 0 <= d_id <= MAX_ID and 0 <= run <= MAX_ID:
                    groups.setdefault((run, pushed.get(d_id, now)), []).append(d_id)
            effects: Effects[None] = Effects(None)
            changes, settled = effects.changes, effects.settled
            for (run, at), ids in groups.items():
                usual = lifecycle.acknowledge(ids[0], lifecycle.BORN, now, at)
                assert usual.new is not None
                for d_id, task_id in tx.apply_many(usual, ids, now, ACK_WHERE, (agent_id, run)):
                    changes.append(Change(d_id, task_id, agent_id, usual.old, usual.new))
                    settled.append((d_id, run))
            if len(settled) == len(unique):
                return effects
            done = set(settled)
            return checked(tx, agent_id, [ref for ref in unique if ref not in done], decide, now, effects)

        return self._submit(op)

    def started(self, agent_id: str, ref: Ref, message: str, now: float) -> asyncio.Future[Effects[None]]:
        return self.started_many(agent_id, [(ref, message)], now)

    def started_many(self, agent_id: str, reports: list[tuple[Ref, str]],
                     now: float) -> asyncio.Future[Effects[None]]:
        """Progress reports: the first of a run makes it ``running``; later ones update its text."""
        messages = dict(reports)  # a run reported on twice in one message keeps the last text

        def decide(tx: Tx, d_id: int, row: _Row, effects: Effects[None]) -> Decision:
            text = messages[d_id, row.run]
            decision = lifecycle.progress(d_id, row.state, now, text)
            if decision.new is not None:
                effects.progressed.append(Progressed(d_id, row.task_id, agent_id, text))
            return decision

        return self._submit(lambda tx: checked(tx, agent_id, list(messages), decide, now))

    def record_results(self, agent_id: str, results: list[ResultIn], now: float,
                       acked: dict[int, float] | None = None) -> asyncio.Future[Effects[None]]:
        by_ref = {(r.delivery_id, r.run): r for r in results}
        pushed = acked or {}

        def decide(tx: Tx, d_id: int, row: _Row, effects: Effects[None]) -> Decision:
            r = by_ref[d_id, row.run]
            # Its ack came with it (an idle agent's quick command): written here.
            with_ack, acked_with = d_id in pushed, pushed.get(d_id)
            plan = r.plan if r.ok else None
            if plan is None:
                return lifecycle.finish(d_id, row.state, now, r, acked_with=acked_with,
                                        with_ack=with_ack)
            task = tx.one("SELECT expires_at, priority, hide_polling_output, COALESCE(parent_id, id) FROM tasks"
                          " WHERE id = ?", (row.task_id,))
            decision = lifecycle.schedule(d_id, row.state, row.run, now, r, plan,
                                          PollSequence(row.poll_deadline, task[0]), acked_with=acked_with,
                                          with_ack=with_ack)
            if decision.writes:
                assert decision.timer is not None
                effects.timers.append((Timer.POLL, d_id, decision.timer))
                for sequel, partial in r.sequels:
                    _sequel(tx, agent_id, task, sequel, partial, r, now, effects)
            return decision

        return self._submit(lambda tx: checked(tx, agent_id, list(by_ref), decide, now))

    def poll_due(self, delivery_id: int, now: float) -> asyncio.Future[Effects[None]]:
        def op(tx: Tx) -> Effects[None]:
            row = tx.one(
                "SELECT d.state, d.run, d.next_run_at, d.poll_deadline, d.poll_timeout, d.agent_id, d.task_id,"
                " t.expires_at, COALESCE(d.command, t.command), COALESCE(d.args, t.args), d.priority"
                " FROM deliveries d JOIN tasks t ON t.id = d.task_id WHERE d.id = ?",
                (delivery_id,),
            )
            if row is None or (row[3] is None and row[0] != DeliveryState.DELAYED):
                return Effects(None)
            state, run, next_run_at, deadline, timeout, agent_id, task_id, expires_at, command, args, priority = row
            deadline, timeout = deadline or 0.0, timeout or 0.0
            decision = lifecycle.poll_due(delivery_id, PollFacts(DeliveryState(state), run, next_run_at, deadline,
                                                                 timeout, expires_at), now)
            effects: Effects[None] = Effects(None)
            if decision.timer is not None:
                effects.timers.append((Timer.POLL, delivery_id, decision.timer))
            if decision.new is None:
                return effects
            tx.apply(delivery_id, decision, now)
            effects.changes.append(Change(delivery_id, task_id, agent_id, decision.old, decision.new))
            if decision.withdraw is not None:
                effects.withdraws.append((agent_id, delivery_id, decision.withdraw))
            if decision.event is DeliveryEvent.RUN_DUE:
                effects.items.append(PushItem(delivery_id, task_id, agent_id, command, args, priority, expires_at,
                                              decision.columns.get("run", run), deadline, timeout))
            return effects

        return self._submit(op)
