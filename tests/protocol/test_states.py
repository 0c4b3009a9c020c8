"""The delivery state table, checked pair by pair against the design (DESIGN.md, "The task model")."""

from __future__ import annotations

import itertools

import pytest

from tether.protocol import DeliveryState, ErrorCode, IllegalTransition, transition
from tether.protocol.states import PENDING, TERMINAL, TRANSITIONS, TTL_BOUND, UNDELIVERED, allowed, task_state

S = DeliveryState

# Written out independently of states.py, from the diagram:
#   queued → sent → acked → running → done | failed
#      \_______\_______\______→ expired (ttl) | cancelled (untask)
#   running → waiting (polling: next run scheduled on the wheel) → queued (next run) …
#   waiting → failed (polling timeout) | expired (ttl) | cancelled (untask)
# plus: a result is the authority, so done/failed may follow queued and sent (the daemon
# crashed before committing the push or the ack); ttl bounds undelivered runs and waits.
EXPECTED: set[tuple[S, S]] = {
    (S.QUEUED, S.SENT), (S.QUEUED, S.ACKED), (S.QUEUED, S.RUNNING), (S.QUEUED, S.DONE),
    (S.QUEUED, S.FAILED), (S.QUEUED, S.EXPIRED), (S.QUEUED, S.CANCELLED),
    (S.SENT, S.ACKED), (S.SENT, S.RUNNING), (S.SENT, S.DONE), (S.SENT, S.FAILED),
    (S.SENT, S.EXPIRED), (S.SENT, S.CANCELLED),
    (S.ACKED, S.RUNNING), (S.ACKED, S.DONE), (S.ACKED, S.FAILED), (S.ACKED, S.CANCELLED),
    (S.RUNNING, S.WAITING), (S.RUNNING, S.DONE), (S.RUNNING, S.FAILED), (S.RUNNING, S.CANCELLED),
    (S.WAITING, S.QUEUED), (S.WAITING, S.FAILED), (S.WAITING, S.EXPIRED), (S.WAITING, S.CANCELLED),
}


def test_the_table_covers_every_state() -> None:
    assert set(TRANSITIONS) == set(S)


@pytest.mark.parametrize(("old", "new"), list(itertools.product(S, S)), ids=lambda s: s.value)
def test_every_pair(old: S, new: S) -> None:
    expected = (old, new) in EXPECTED
    assert allowed(old, new) is expected
    assert allowed(old.value, new) is expected
    if expected:
        assert transition(7, old, new) is new
        assert transition(7, old.value, new) is new
    else:
        with pytest.raises(IllegalTransition) as caught:
            transition(7, old.value, new)
        exc = caught.value
        assert (exc.code, exc.ref, exc.old, exc.new) == (ErrorCode.ILLEGAL_TRANSITION, 7, old, new)
        assert exc.message == f"delivery 7 is {old.value}; it cannot become {new.value}"


@pytest.mark.parametrize("state", sorted(TERMINAL))
def test_terminal_states_have_no_exits(state: S) -> None:
    assert state.terminal
    assert TRANSITIONS[state] == frozenset()


def test_state_sets() -> None:
    assert TERMINAL == {S.DONE, S.FAILED, S.EXPIRED, S.CANCELLED}
    assert PENDING == set(S) - TERMINAL
    assert not any(s.terminal for s in PENDING)
    assert TTL_BOUND == {s for s in S if S.EXPIRED in TRANSITIONS[s]}, "ttl expires only these"
    assert UNDELIVERED == {S.QUEUED, S.SENT} and TTL_BOUND == UNDELIVERED | {S.WAITING}
    assert all(S.CANCELLED in TRANSITIONS[s] for s in PENDING), "untask cancels anything pending"


def test_every_state_is_reachable_and_every_pending_state_can_finish() -> None:
    reached, frontier = {S.QUEUED}, [S.QUEUED]
    while frontier:
        for nxt in TRANSITIONS[frontier.pop()] - reached:
            reached.add(nxt)
            frontier.append(nxt)
    assert reached == set(S)
    assert all(TRANSITIONS[s] & TERMINAL for s in PENDING)


def test_an_unknown_state_name_is_refused() -> None:
    with pytest.raises(ValueError, match="'finished' is not a valid DeliveryState"):
        transition(1, "finished", S.DONE)


@pytest.mark.parametrize(("stored", "one_agent", "deliveries", "shown"), [
    ("active", True, ["done"], "done"),
    ("active", True, ["done", "failed"], "failed"),  # a polling sequel failed
    ("active", True, ["cancelled"], "cancelled"),
    ("closed", True, ["expired"], "expired"),
    ("active", True, ["done", "waiting"], "active"),
    ("active", True, [], "active"),
    ("active", False, ["done"], "active"),  # a tag task still reaches new agents
    ("cancelled", False, ["done"], "cancelled"),
])
def test_task_state_reads_as_its_deliveries_ended_for_one_agent(stored: str, one_agent: bool,
                                                                deliveries: list[str], shown: str) -> None:
    assert task_state(stored, one_agent, deliveries) == shown
