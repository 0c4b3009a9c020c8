"""Runs in the in-memory store (as ``sqlite_runs``): what agents report, checked and
decided by the lifecycle, and what polling timers do."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from ...protocol import lifecycle
from ...protocol.errors import ErrorCode, RemoteProtocolError
from ...protocol.lifecycle import (
    BORN,
    SEQUEL_STATE,
    Decision,
    DeliveryEvent,
    DeliveryState,
    PollFacts,
    PollSequence,
    RunCheck,
    RunResult,
)
from ..effects import Change, Effects, Progressed, PushItem, Ref, Refusal, Timer
from . import (
    ResultIn,
)
from .memory_tables import DeliveryRecord, MemoryTables, TaskRecord, next_id


class MemoryRuns(MemoryTables):
    def _checked(self, agent_id: str, refs: list[Ref], decide: Callable[[DeliveryRecord, Effects[None]], Decision],
                 now: float, effects: Effects[None] | None = None) -> Effects[None]:
        """Reports on runs the agent names, each checked first (as ``sqlite_runs.checked``)."""
        effects = Effects(None) if effects is None else effects
        for d_id, run in dict.fromkeys(refs):
            d = self._deliveries.get(d_id)
            if d is None:
                effects.refused.append(Refusal(d_id, ErrorCode.UNKNOWN_DELIVERY, f"no delivery {d_id}"))
                continue
            if d.agent_id != agent_id:
                effects.refused.append(Refusal(d_id, ErrorCode.FORBIDDEN, f"delivery {d_id} belongs to another agent"))
                continue
            try:
                if lifecycle.check_run(d_id, run, d.run) is RunCheck.SETTLED:
                    effects.settled.append((d_id, run))  # about an earlier run: recorded before the next was queued
                    continue
                decision = decide(d, effects)
            except RemoteProtocolError as exc:
                effects.refused.append(Refusal(d_id, exc.code, exc.message))
                continue
            effects.settled.append((d_id, run))
            self._apply(d, decision, now)
            if decision.moves:
                assert decision.new is not None
                effects.changes.append(Change(d_id, d.task_id, agent_id, decision.old, decision.new))
        return effects

    def acknowledge(self, agent_id: str, refs: list[Ref], now: float,
                    sent_at: dict[int, float] | None = None) -> asyncio.Future[Effects[None]]:
        pushed = sent_at or {}

        def op() -> Effects[None]:
            # As SQLite does it: the usual ack (queued, this agent's, on that run) first, the rest checked.
            effects: Effects[None] = Effects(None)
            unique = list(dict.fromkeys(refs))
            for d_id, run in unique:
                d = self._deliveries.get(d_id)
                if d is not None and d.agent_id == agent_id and d.run == run and d.state == BORN:
                    decision = lifecycle.acknowledge(d_id, d.state, now, pushed.get(d_id, now))
                    self._apply(d, decision, now)
                    assert decision.new is not None
                    effects.changes.append(Change(d_id, d.task_id, agent_id, decision.old, decision.new))
                    effects.settled.append((d_id, run))
            done = set(effects.settled)
            return self._checked(agent_id, [r for r in unique if r not in done],
                                 lambda d, e: lifecycle.acknowledge(d.id, d.state, now, pushed.get(d.id)), now, effects)

        return self._future(op)

    def started(self, agent_id: str, ref: Ref, message: str, now: float) -> asyncio.Future[Effects[None]]:
        return self.started_many(agent_id, [(ref, message)], now)

    def started_many(self, agent_id: str, reports: list[tuple[Ref, str]],
                     now: float) -> asyncio.Future[Effects[None]]:
        messages = dict(reports)  # a run reported on twice in one message keeps the last text

        def decide(d: DeliveryRecord, effects: Effects[None]) -> Decision:
            text = messages[d.id, d.run]
            decision = lifecycle.progress(d.id, d.state, now, text)
            if decision.new is not None:
                effects.progressed.append(Progressed(d.id, d.task_id, agent_id, text))
            return decision

        return self._future(lambda: self._checked(agent_id, list(messages), decide, now))

    def record_results(self, agent_id: str, results: list[ResultIn], now: float,
                       acked: dict[int, float] | None = None) -> asyncio.Future[Effects[None]]:
        by_ref = {(r.delivery_id, r.run): r for r in results}
        pushed = acked or {}

        def decide(d: DeliveryRecord, effects: Effects[None]) -> Decision:
            r = by_ref[d.id, d.run]
            with_ack, acked_with = d.id in pushed, pushed.get(d.id)
            plan = r.plan if r.ok else None
            if plan is None:
                return lifecycle.finish(d.id, d.state, now, r, acked_with=acked_with, with_ack=with_ack)
            task = self._tasks[d.task_id]
            decision = lifecycle.schedule(d.id, d.state, d.run, now, r, plan, PollSequence(d.poll_deadline,
                                                                                          task.expires_at),
                                          acked_with=acked_with, with_ack=with_ack)
            if decision.writes:
                assert decision.timer is not None
                effects.timers.append((Timer.POLL, d.id, decision.timer))
                for sequel, partial in r.sequels:
                    self._sequel(agent_id, task, sequel, partial, r, now, effects)
            return decision

        return self._future(lambda: self._checked(agent_id, list(by_ref), decide, now))

    def _sequel(self, agent_id: str, parent: TaskRecord, plan: lifecycle.WaitPlan, partial: bytes, r: ResultIn, now: float,
                effects: Effects[None]) -> None:
        """A further polling sequence a run started: a task of its own for the same agent."""
        root = parent.parent_id if parent.parent_id is not None else parent.id
        task = TaskRecord(next_id(self._tasks), plan.command, plan.args, "agent", agent_id, parent.priority,
                     max(1, round(parent.expires_at - now)), now, parent.expires_at, parent.hide_polling_output,
                     parent_id=root)
        self._tasks[task.id] = task
        result = RunResult(ok=r.ok, output=partial, error=r.error, started_at=r.started_at, finished_at=r.finished_at)
        columns, history, timer = lifecycle.start_sequel(now, result, plan, task.expires_at)
        d = DeliveryRecord(next_id(self._deliveries), task.id, agent_id, SEQUEL_STATE.value, task.priority, now)
        for name, value in columns.items():
            setattr(d, name, value)
        self._deliveries[d.id] = d
        self._by_task_agent[task.id, agent_id] = d.id
        self._entered[SEQUEL_STATE] += 1
        self._add_history(d.id, history)
        effects.timers += [(Timer.POLL, d.id, timer), (Timer.EXPIRE_ONE, task.id, task.expires_at)]

    def poll_due(self, delivery_id: int, now: float) -> asyncio.Future[Effects[None]]:
        def op() -> Effects[None]:
            d = self._deliveries.get(delivery_id)
            if d is None or (d.poll_deadline is None and d.state != DeliveryState.DELAYED):
                return Effects(None)
            task = self._tasks[d.task_id]
            decision = lifecycle.poll_due(delivery_id, PollFacts(DeliveryState(d.state), d.run, d.next_run_at,
                                                                 d.poll_deadline or 0.0, d.poll_timeout or 0.0,
                                                                 task.expires_at), now)
            effects: Effects[None] = Effects(None)
            if decision.timer is not None:
                effects.timers.append((Timer.POLL, delivery_id, decision.timer))
            if decision.new is None:
                return effects
            self._apply(d, decision, now)
            effects.changes.append(Change(delivery_id, d.task_id, d.agent_id, decision.old, decision.new))
            if decision.withdraw is not None:
                effects.withdraws.append((d.agent_id, delivery_id, decision.withdraw))
            if decision.event is DeliveryEvent.RUN_DUE:
                effects.items.append(PushItem(
                    delivery_id, d.task_id, d.agent_id, task.command if d.command is None else d.command,
                    task.args if d.args is None else d.args, d.priority, task.expires_at, d.run, d.poll_deadline or 0.0,
                    d.poll_timeout or 0.0))
            return effects

        return self._future(op)
