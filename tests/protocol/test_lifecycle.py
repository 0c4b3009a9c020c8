"""The lifecycle tables decide: each event's outcome for each state, the columns it writes,
the timers it sets, and whose fault an unlisted pair is."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from tether.protocol.errors import ErrorCode, LocalProtocolError, ProtocolError, RemoteProtocolError
from tether.protocol.lifecycle import (
    BORN,
    DELIVERY,
    IGNORED,
    OPEN_RUNS,
    PENDING,
    PUSHABLE,
    RUN,
    SEQUEL_STATE,
    TASK,
    TERMINAL,
    TTL_BOUND,
    UNDELIVERED,
    DeliveryEvent,
    DeliveryState,
    IllegalTransition,
    PollFacts,
    PollSequence,
    RunCheck,
    RunEvent,
    RunResult,
    RunState,
    TaskEvent,
    TaskState,
    WaitPlan,
    acknowledge,
    born,
    cancel_reason,
    check_run,
    end_by_daemon,
    finish,
    listed,
    mark_sent,
    moves,
    next_state,
    poll_due,
    progress,
    run_next,
    schedule,
    shown_history,
    sql_in,
    sql_value,
    start_sequel,
    task_next,
    task_reads_as,
)

S = DeliveryState
E = DeliveryEvent
ENDED_BY_DAEMON = {S.EXPIRED, S.CANCELLED}
PLAN = WaitPlan(command="status", args=b"\x80", interval=30.0, timeout=600.0, note="n", poll_message="m",
                items_remaining=3)


# -- the table ----------------------------------------------------------------------------


# Written out independently of lifecycle.py, from the diagram (DESIGN.md "The task model"):
#   queued → sent → acked → running → done | failed
#      \_______\_______\______→ expired (ttl) | cancelled (untask)
#   running → waiting (polling: next run scheduled on the wheel) → queued (next run) …
#   waiting → failed (polling timeout) | expired (ttl) | cancelled (untask)
#   delayed (not before its time, issue 19.2) → queued | expired (ttl) | cancelled (untask)
# plus: a result is the authority, so done/failed/waiting may follow queued, sent and acked
# (the daemon crashed before committing the push or the ack, or the agent sent no start
# report); a next run not yet acknowledged fails at its sequence's timeout.
EXPECTED: set[tuple[S, S]] = {
    (S.QUEUED, S.SENT), (S.QUEUED, S.ACKED), (S.QUEUED, S.RUNNING), (S.QUEUED, S.DONE), (S.QUEUED, S.WAITING),
    (S.QUEUED, S.FAILED), (S.QUEUED, S.EXPIRED), (S.QUEUED, S.CANCELLED),
    (S.SENT, S.ACKED), (S.SENT, S.RUNNING), (S.SENT, S.DONE), (S.SENT, S.WAITING), (S.SENT, S.FAILED),
    (S.SENT, S.EXPIRED), (S.SENT, S.CANCELLED),
    (S.ACKED, S.RUNNING), (S.ACKED, S.DONE), (S.ACKED, S.WAITING), (S.ACKED, S.FAILED), (S.ACKED, S.CANCELLED),
    (S.RUNNING, S.WAITING), (S.RUNNING, S.DONE), (S.RUNNING, S.FAILED), (S.RUNNING, S.CANCELLED),
    (S.WAITING, S.QUEUED), (S.WAITING, S.FAILED), (S.WAITING, S.EXPIRED), (S.WAITING, S.CANCELLED),
    (S.DELAYED, S.QUEUED), (S.DELAYED, S.EXPIRED), (S.DELAYED, S.CANCELLED),
}
NEVER_PUSHED = {S.DELAYED}


def test_the_table_moves_as_the_design_draws() -> None:
    assert set(DELIVERY) == set(S)
    moved = {(old, new) for old, row in DELIVERY.items() for new in row.values()
             if isinstance(new, DeliveryState) and new != old}
    assert moved == EXPECTED


def test_every_state_is_reachable_and_every_pending_state_can_finish() -> None:
    def after(state: S) -> set[S]:
        return {new for new in DELIVERY[state].values() if isinstance(new, DeliveryState)}

    reached, frontier = {BORN, SEQUEL_STATE, S.DELAYED}, [BORN, SEQUEL_STATE, S.DELAYED]
    while frontier:
        for nxt in after(frontier.pop()) - reached:
            reached.add(nxt)
            frontier.append(nxt)
    assert reached == set(S)
    assert all(after(s) & TERMINAL for s in PENDING)


def test_the_table_is_read_by_state_and_event() -> None:
    assert next_state(1, "queued", E.ACK) is S.ACKED and next_state(1, S.DONE, E.ACK) is IGNORED


def test_an_unknown_state_name_is_refused() -> None:
    with pytest.raises(ValueError, match="'finished' is not a valid DeliveryState"):
        next_state(1, "finished", E.ACK)


def test_every_state_takes_every_daemon_event() -> None:
    """The daemon's own events (timers, untask) race anything: none of them can be a bug
    of ordering, so every state lists every one."""
    for state, row in DELIVERY.items():
        for event in E:
            if not event.by_agent:
                assert event in row, (state, event)


def test_agent_reports_are_refused_only_for_deliveries_the_daemon_ended_or_never_pushed() -> None:
    for state, row in DELIVERY.items():
        for event in E:
            if event.by_agent:
                assert (event in row) == (state not in ENDED_BY_DAEMON | NEVER_PUSHED), (state, event)
    with pytest.raises(IllegalTransition):
        acknowledge(1, S.DELAYED, 10.0)


def test_a_terminal_state_never_moves() -> None:
    for state in TERMINAL:
        assert set(DELIVERY[state].values()) == {IGNORED}


def test_derived_state_sets() -> None:
    assert PENDING == {S.DELAYED, S.QUEUED, S.SENT, S.ACKED, S.RUNNING, S.WAITING}
    assert TTL_BOUND == {S.DELAYED, S.QUEUED, S.SENT, S.WAITING}
    assert PUSHABLE <= PENDING and S.WAITING not in PUSHABLE and S.DELAYED not in PUSHABLE
    assert all(s.terminal for s in TERMINAL) and not any(s.terminal for s in PENDING)


def test_a_report_on_a_cancelled_delivery_is_the_agents_fault() -> None:
    with pytest.raises(IllegalTransition) as caught:
        next_state(7, "cancelled", E.FINISH)
    assert isinstance(caught.value, RemoteProtocolError)
    assert caught.value.code == ErrorCode.ILLEGAL_TRANSITION and caught.value.ref == 7
    assert caught.value.message == "delivery 7 is cancelled; it cannot take a result"
    assert caught.value.old is S.CANCELLED and caught.value.event is E.FINISH


def test_an_unlisted_daemon_event_is_tetherds_bug(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(DELIVERY[S.DONE], E.UNTASK)  # type: ignore[attr-defined]
    with pytest.raises(LocalProtocolError) as caught:
        next_state(9, S.DONE, E.UNTASK)
    assert caught.value.code == ErrorCode.INTERNAL and "bug" in caught.value.message


# -- the agent's reports -------------------------------------------------------------------


def test_an_ack_writes_the_push_time_of_a_push_never_marked_sent() -> None:
    d = acknowledge(1, S.QUEUED, now=10.0, pushed_at=9.5)
    assert (d.new, dict(d.columns), d.moves, d.writes) == (S.ACKED, {"acked_at": 10.0, "sent_at": 9.5}, True, True)
    assert dict(acknowledge(1, S.QUEUED, now=10.0).columns) == {"acked_at": 10.0, "sent_at": 10.0}
    assert dict(acknowledge(1, S.SENT, now=10.0, pushed_at=9.5).columns) == {"acked_at": 10.0}


@pytest.mark.parametrize("state", [S.ACKED, S.RUNNING, S.WAITING, S.DONE, S.FAILED])
def test_a_repeated_ack_is_ignored(state: DeliveryState) -> None:
    d = acknowledge(1, state, now=10.0)
    assert (d.new, d.writes, d.moves, d.old) == (None, False, False, state)


def test_progress_starts_a_run_then_only_updates_its_text() -> None:
    started = progress(1, S.ACKED, now=5.0, text="")
    assert started.new is S.RUNNING and dict(started.columns) == {"progress": "", "started_at": 5.0}
    update = progress(1, S.RUNNING, now=6.0, text="50% half")
    assert update.new is S.RUNNING and not update.moves and update.writes
    assert dict(update.columns) == {"progress": "50% half"}
    assert not progress(1, S.WAITING, now=6.0, text="late").writes


def test_a_result_ends_the_delivery_and_may_carry_its_ack() -> None:
    result = RunResult(ok=True, output=b"\x01", started_at=3.0, finished_at=4.0)
    done = finish(1, S.RUNNING, 5.0, result)
    assert done.new is S.DONE and dict(done.columns) == {
        "result": b"\x01", "error": "", "started_at": 3.0, "finished_at": 4.0, "ended_by": "agent"}
    quick = finish(1, S.QUEUED, 5.0, RunResult(ok=False, output=b"\xc0", error="boom"), with_ack=True, acked_with=2.0)
    assert quick.new is S.FAILED and quick.event is E.FAIL
    assert quick.columns["acked_at"] == 5.0 and quick.columns["sent_at"] == 2.0
    assert quick.columns["started_at"] is None and quick.columns["finished_at"] == 5.0
    acked = finish(1, S.ACKED, 5.0, result, with_ack=True, acked_with=2.0)
    assert "acked_at" not in acked.columns  # its ack was written already
    assert not finish(1, S.DONE, 5.0, result).writes  # re-sent from the outbox
    with pytest.raises(IllegalTransition):
        finish(1, S.EXPIRED, 5.0, result)


def test_the_first_schedule_starts_the_sequences_timeout() -> None:
    result = RunResult(ok=True, output=b"\x81\xa1a\x01", started_at=1.0, finished_at=2.0)
    d = schedule(1, S.RUNNING, 1, 10.0, result, PLAN, PollSequence(None, expires_at=1000.0))
    assert d.new is S.WAITING and d.timer == 40.0
    assert d.columns["poll_deadline"] == 610.0 and d.columns["poll_timeout"] == 600.0
    assert d.columns["next_run_at"] == 40.0 and d.columns["command"] == "status"
    assert d.history is not None and d.history.partial == b"\x81\xa1a\x01" and d.history.run == 1
    assert (d.history.at, d.history.items_remaining, d.history.next_command) == (2.0, 3, "status")


def test_a_later_schedule_keeps_the_deadline_and_the_ttl_bounds_the_timer() -> None:
    nothing = RunResult(ok=True, output=b"\xc0")
    d = schedule(1, S.QUEUED, 3, 10.0, nothing, PLAN, PollSequence(25.0, expires_at=20.0),
                 with_ack=True, acked_with=9.0)
    assert "poll_deadline" not in d.columns and d.timer == 20.0
    assert d.history is not None and d.history.partial is None and d.history.at == 10.0
    assert d.columns["acked_at"] == 10.0 and d.columns["sent_at"] == 9.0
    assert not schedule(1, S.WAITING, 3, 10.0, nothing, PLAN, PollSequence(25.0, 20.0)).writes


def test_a_sequel_waits_for_its_run_2() -> None:
    columns, history, timer = start_sequel(10.0, RunResult(ok=True, output=b"\xc0"), PLAN, expires_at=30.0)
    assert columns["poll_deadline"] == 610.0 and history.run == 1 and timer == 30.0


# -- the daemon's decisions ---------------------------------------------------------------


def test_a_push_is_marked_sent_only_while_queued() -> None:
    d = mark_sent(1, S.QUEUED, 4.0)
    assert d.new is S.SENT and dict(d.columns) == {"sent_at": 4.0}
    assert not mark_sent(1, S.ACKED, 4.0).writes


def test_the_daemons_end_tells_an_agent_that_may_hold_the_run() -> None:
    untask = end_by_daemon(1, S.RUNNING, E.UNTASK, 5.0)
    assert untask.new is S.CANCELLED and untask.withdraw == "cancelled"
    assert dict(untask.columns) == {"error": "", "finished_at": 5.0, "ended_by": "daemon"}
    ttl = end_by_daemon(1, S.SENT, E.TTL_END, 5.0, "the task's ttl ended")
    assert ttl.new is S.EXPIRED and ttl.withdraw == "expired" and ttl.columns["error"] == "the task's ttl ended"
    waiting = end_by_daemon(1, S.WAITING, E.UNTASK, 5.0)
    assert waiting.new is S.CANCELLED and waiting.withdraw is None  # its last run is over
    assert not end_by_daemon(1, S.RUNNING, E.TTL_END, 5.0).writes  # acknowledged: runs to completion
    assert not end_by_daemon(1, S.DONE, E.UNTASK, 5.0).writes


def facts(state: DeliveryState, run: int = 2, next_run_at: float | None = 40.0, deadline: float = 600.0,
          expires_at: float = 1000.0) -> PollFacts:
    return PollFacts(state=state, run=run, next_run_at=next_run_at, poll_deadline=deadline, poll_timeout=590.0,
                     expires_at=expires_at)


def test_a_due_next_run_is_queued_as_run_plus_one() -> None:
    d = poll_due(1, facts(S.WAITING), 40.0)
    assert d.new is S.QUEUED and d.columns["run"] == 3 and d.timer == 600.0
    assert d.columns["sent_at"] is None and d.columns["next_run_at"] is None


def test_a_timer_woken_early_looks_again_at_the_next_run() -> None:
    d = poll_due(1, facts(S.WAITING), 39.0)
    assert not d.writes and d.timer == 40.0


def test_the_sequence_times_out_with_the_daemons_entry() -> None:
    d = poll_due(1, facts(S.WAITING), 600.0)
    assert d.new is S.FAILED and d.columns["error"] == "polling timed out after 590 s" and d.withdraw is None
    undelivered = poll_due(1, facts(S.SENT), 600.0)
    assert undelivered.new is S.FAILED and undelivered.withdraw == "expired"


def test_an_undelivered_next_run_is_looked_at_again_at_the_deadline() -> None:
    d = poll_due(1, facts(S.QUEUED), 50.0)
    assert not d.writes and d.timer == 600.0


def test_a_next_run_past_the_ttl_expires() -> None:
    d = poll_due(1, facts(S.WAITING, run=4, expires_at=30.0), 35.0)
    assert d.new is S.EXPIRED and d.columns["error"] == "the task's ttl ended before run 5 was due"


# -- not before its time (a task's delay and jitter, issue 19.2) ------------------------------


def test_a_delivery_is_born_delayed_only_while_its_time_is_to_come() -> None:
    assert (born(20.0, 10.0), born(10.0, 10.0), born(0.0, 10.0)) == (S.DELAYED, BORN, BORN)


def delayed(not_before: float = 40.0, expires_at: float = 100.0) -> PollFacts:
    return PollFacts(state=S.DELAYED, run=1, next_run_at=not_before, poll_deadline=0.0, poll_timeout=0.0,
                     expires_at=expires_at)


def test_a_delayed_delivery_is_queued_at_its_time_as_run_1() -> None:
    early = poll_due(1, delayed(), 39.9)
    assert not early.writes and early.timer == 40.0  # woken early: look again then
    assert poll_due(1, delayed(not_before=400.0), 39.9).timer == 100.0  # the ttl comes first
    due = poll_due(1, delayed(), 40.0)
    assert (due.old, due.new, due.event, due.columns, due.timer, due.withdraw) == (
        S.DELAYED, S.QUEUED, E.RUN_DUE, {"next_run_at": None}, None, None)


def test_a_delayed_delivery_ends_at_the_ttl_or_an_untask_and_no_agent_is_told() -> None:
    ended = poll_due(1, delayed(not_before=400.0), 100.0)
    assert ended.new is S.EXPIRED and ended.columns["error"] == "the task's ttl ended" and ended.withdraw is None
    untasked = end_by_daemon(1, S.DELAYED, E.UNTASK, 50.0)
    assert untasked.new is S.CANCELLED and untasked.withdraw is None


@pytest.mark.parametrize("state,run", [(S.ACKED, 2), (S.RUNNING, 2), (S.DONE, 2), (S.QUEUED, 1)])
def test_a_poll_timer_leaves_a_run_its_result_decides(state: DeliveryState, run: int) -> None:
    d = poll_due(1, facts(state, run=run), 700.0)
    assert not d.writes and d.timer is None


# -- runs, history, tasks, the journal ------------------------------------------------------


def test_which_run_a_report_is_about() -> None:
    assert check_run(1, 2, 2) is RunCheck.APPLY
    assert check_run(1, 1, 2) is RunCheck.SETTLED
    with pytest.raises(RemoteProtocolError) as caught:
        check_run(1, 3, 2)
    assert "run 3 was never sent" in caught.value.message


@dataclass
class Entry:
    state: str
    partial_result: Any = None


def test_polling_output_hidden_as_in_xsoar() -> None:
    entries = [Entry("waiting"), Entry("waiting"), Entry("waiting", {"p": 1}), Entry("done")]
    kept, hidden = shown_history(entries, hide=True)
    assert kept == [entries[0], entries[2], entries[3]] and hidden == 1
    assert shown_history(entries, hide=False) == (entries, 0)


def test_task_table() -> None:
    assert task_next("active", TaskEvent.TTL_END) is TaskState.CLOSED
    assert task_next(TaskState.ACTIVE, TaskEvent.UNTASK) is TaskState.CANCELLED
    assert all(v is IGNORED for s in (TaskState.CLOSED, TaskState.CANCELLED) for v in TASK[s].values())


@pytest.mark.parametrize(("stored", "one_agent", "deliveries", "ttl_ended", "shown"), [
    ("active", True, ["done"], False, "done"),
    ("active", True, ["done", "failed"], False, "failed"),  # a polling sequel failed
    ("active", True, ["cancelled"], False, "cancelled"),
    ("closed", True, ["expired"], False, "expired"),
    ("active", True, ["done", "done"], True, "done"),
    ("active", True, ["done", "waiting"], False, "active"),
    ("active", True, ["done", "waiting"], True, "closed"),
    ("active", True, [], False, "active"),
    ("active", False, ["done"], False, "active"),  # a tag task still reaches new agents
    ("active", False, ["done"], True, "closed"),  # ... until its ttl ends, marked or not
    ("cancelled", False, ["done"], True, "cancelled"),
])
def test_how_a_task_reads(stored: str, one_agent: bool, deliveries: list[str], ttl_ended: bool, shown: str) -> None:
    assert task_reads_as(stored, one_agent, deliveries, ttl_ended=ttl_ended) == shown


def test_journal_run_table() -> None:
    assert run_next("pending", RunEvent.CLAIM) is RunState.RUNNING
    assert run_next(RunState.RUNNING, RunEvent.RECOVER) is RunState.FINISHED
    assert run_next(RunState.CANCELLED, RunEvent.FINISH) is IGNORED
    with pytest.raises(LocalProtocolError):
        run_next(RunState.FINISHED, RunEvent.CLAIM)
    assert set(RUN) == set(RunState)


def test_states_as_sql() -> None:
    assert sql_in({S.SENT, S.QUEUED}) == "('queued','sent')"
    assert sql_in([RunState.PENDING]) == "('pending')"
    assert sql_value(TaskState.ACTIVE) == "'active'"


def test_what_each_event_moves_in_one_statement() -> None:
    assert moves(DELIVERY, E.TTL_END) == (TTL_BOUND, S.EXPIRED)
    assert moves(DELIVERY, E.UNTASK) == (PENDING, S.CANCELLED)
    assert moves(DELIVERY, E.UNACKED) == ({S.QUEUED}, S.SENT)
    assert moves(DELIVERY, E.ACK) == (UNDELIVERED, S.ACKED)
    assert moves(TASK, TaskEvent.TTL_END) == ({TaskState.ACTIVE}, TaskState.CLOSED)
    assert moves(RUN, RunEvent.CANCEL) == (OPEN_RUNS, RunState.CANCELLED)
    forked = {S.QUEUED: {E.FINISH: S.DONE}, S.SENT: {E.FINISH: S.FAILED}}
    with pytest.raises(ValueError, match="not to one state"):
        moves(forked, E.FINISH)  # no one UPDATE applies that


@pytest.mark.parametrize("event", [E.UNACKED, E.ACK])
def test_the_batched_paths_events_are_ignored_by_every_state_they_do_not_move(event: DeliveryEvent) -> None:
    """The store applies these to many rows in one UPDATE ``WHERE state = old``: right only
    if every other state ignores the event (so leaving those rows alone is the decision)."""
    olds, _ = moves(DELIVERY, event)
    for state, row in DELIVERY.items():
        if state not in olds:
            assert row.get(event) in (IGNORED, None), state  # None: the agent's fault (refused)


def test_a_cancel_says_how_the_daemon_ended_the_run() -> None:
    assert (cancel_reason(S.CANCELLED), cancel_reason("expired"), cancel_reason(S.FAILED)) == (
        "cancelled", "expired", "expired")


def test_what_a_listing_asks_for() -> None:
    assert listed(None) == PENDING == listed("pending")
    assert listed("all") == set(S) and listed("waiting") == {S.WAITING}
    with pytest.raises(ProtocolError) as caught:
        listed("finished")
    assert caught.value.code == ErrorCode.INVALID_PARAMS
    assert caught.value.message.startswith("unknown state 'finished' (use one of: pending, all, delayed, queued, sent,")
