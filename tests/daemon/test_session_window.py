"""The push window counts runs: a late report about an earlier run of a polling delivery
frees no room, so the window is never overrun."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tether.daemon import session as session_module
from tether.daemon.broker import Stats
from tether.daemon.session import MAX_CONTROL_BACKLOG, AgentSession, SentMarks
from tether.daemon.store import PushItem
from tether.protocol.codec import MSGPACK, error_frame
from tether.protocol.errors import ErrorCode, ProtocolError


class _Broker:
    def __init__(self) -> None:
        self.stats = Stats()
        self.sent_marks = SentMarks()


def session(window: int) -> AgentSession:
    broker: Any = _Broker()
    return AgentSession(None, MSGPACK, "a1", "s1", window, set(), broker)  # type: ignore[arg-type]


def item(delivery_id: int, run: int = 1) -> PushItem:
    return PushItem(delivery_id, delivery_id, "a1", "record", b"\x80", 1, 1e12, run)


async def test_a_stale_result_of_an_earlier_run_frees_no_slot() -> None:
    s = session(window=1)
    s.offer([item(1, run=2), item(2)])
    assert [i.delivery_id for i in s._take()] == [1]
    s.settled([(1, 1)])  # run 1's result, sent again after a reconnect
    assert s._take() == [], "the window of 1 is held by run 2"
    s.acked([(1, 1)], {})
    assert s._take() == []
    s.acked([(1, 2)], {})
    assert [i.delivery_id for i in s._take()] == [2]


async def test_a_result_of_the_run_in_flight_frees_its_slot() -> None:
    s = session(window=1)
    s.offer([item(1), item(2)])
    assert [i.delivery_id for i in s._take()] == [1]
    s.settled([(1, 1)])
    assert [i.delivery_id for i in s._take()] == [2]


async def test_error_replies_pile_up_only_to_a_bound() -> None:
    s = session(window=1)
    frame = error_frame(ProtocolError(ErrorCode.MALFORMED_FRAME, "x"))
    for _ in range(MAX_CONTROL_BACKLOG + 50):
        s.tell(frame)
    assert len(s.control) == MAX_CONTROL_BACKLOG
    assert s.broker.stats.untold == 50
    s.cancel(99, "cancelled")  # a cancel is never dropped
    assert len(s.control) == MAX_CONTROL_BACKLOG + 1


class _Store:
    def __init__(self) -> None:
        self.marked: list[tuple[list[int], float]] = []

    def mark_sent(self, delivery_ids: list[int], now: float) -> None:
        self.marked.append((delivery_ids, now))


def marking_session(window: int) -> tuple[AgentSession, _Store]:
    broker: Any = _Broker()
    broker.store = _Store()
    return AgentSession(None, MSGPACK, "a1", "s1", window, set(), broker), broker.store  # type: ignore[arg-type]


async def test_only_a_push_left_unacknowledged_is_written_as_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(session_module, "SENT_MARK_DELAY", 0.05)
    s, store = marking_session(window=4)
    s.offer([item(1), item(2), item(3)])
    pushed = s._take()
    sent_at: dict[int, float] = {}
    s.acked([(1, 1), (3, 1)], sent_at)  # acknowledged at once: the ack writes the push time
    assert set(sent_at) == {1, 3} and sent_at[1] == sent_at[3] and len(pushed) == 3
    assert store.marked == []
    await asyncio.sleep(0.15)
    assert store.marked == [([2], sent_at[1])]  # only 2 waited past the delay, marked with its push time
    s.offer([item(4)])
    s._take()
    s.mark_sent(everything=True)  # the session ends: what is still unacknowledged is marked now
    assert [ids for ids, _ in store.marked] == [[2], [4]]


async def test_the_sessions_of_a_broker_share_one_timer_for_their_sent_marks(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fan-out to 100 online sessions arms one timer, not 100; each session's unacknowledged
    push is marked once its own delay is over, a later push of a session later."""
    monkeypatch.setattr(session_module, "SENT_MARK_DELAY", 0.2)
    loop = asyncio.get_running_loop()
    armed: list[float] = []
    call_later = loop.call_later

    def counted(delay: float, callback: Any, *args: Any) -> asyncio.TimerHandle:
        if getattr(callback, "__self__", None) is broker.sent_marks:  # not the test's sleeps
            armed.append(delay)
        return call_later(delay, callback, *args)

    broker: Any = _Broker()
    monkeypatch.setattr(loop, "call_later", counted)
    broker.store = store = _Store()
    sessions = [AgentSession(None, MSGPACK, f"a{i}", "s1", 4, set(), broker) for i in range(100)]  # type: ignore[arg-type]
    for i, s in enumerate(sessions):
        s.offer([item(i)])
        s._take()
    assert len(armed) == 1 and len(broker.sent_marks) == 100
    for i, s in enumerate(sessions[:50]):
        s.acked([(i, 1)], {})  # acknowledged in time: never written as sent
    await asyncio.sleep(0.1)
    late = sessions[0]
    late.offer([item(1000)])
    late._take()  # a second push of a session already due a mark: due at 0.3 s
    await asyncio.sleep(0.15)  # 0.25 s
    assert sorted(ids[0] for ids, _ in store.marked) == list(range(50, 100))
    await asyncio.sleep(0.15)  # 0.4 s
    assert store.marked[-1][0] == [1000] and len(store.marked) == 51
    assert len(broker.sent_marks) == 0 and len(armed) == 2  # for the first pushes, then for the late one


async def test_a_sweep_that_fires_a_little_early_marks_what_is_due(monkeypatch: pytest.MonkeyPatch) -> None:
    """A timer may fire a little before its time: the push due then is marked by that sweep
    (not put back, due at once, for ever)."""
    monkeypatch.setattr(session_module, "SENT_MARK_DELAY", 10.0)
    clock = [1000.0]
    monkeypatch.setattr(session_module.time, "time", lambda: clock[0])
    broker: Any = _Broker()
    broker.store = store = _Store()
    s = AgentSession(None, MSGPACK, "a1", "s1", 4, set(), broker)  # type: ignore[arg-type]
    s.offer([item(1)])
    s._take()  # pushed at 1000: due its mark at 1010
    clock[0] = 1010 - SentMarks.SLACK / 2
    broker.sent_marks._sweep()
    assert store.marked == [([1], 1000.0)] and len(broker.sent_marks) == 0 and not s.mark_due


async def test_a_delivery_ended_while_the_rest_of_the_queue_is_read_is_not_pushed() -> None:
    s = session(window=10)
    s.offer_first([item(1), item(2)])  # the first page goes out while the rest is read
    assert sorted(s.queued_ids) == [1, 2] and s.ended_while_loading is not None
    s.cancel(1, "cancelled")  # queued: withdrawn at once
    s.cancel(4, "expired")  # in the rest, ended after that read began: it may still list it
    s.offer_loaded([item(3), item(4)])
    assert sorted(s.queued_ids) == [2, 3] and s.ended_while_loading is None
    assert [i.delivery_id for i in s._take()] == [2, 3]
