"""The push window counts runs: a late report about an earlier run of a polling delivery
frees no room, so the window is never overrun."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tether.daemon import session as session_module
from tether.daemon.broker import Stats
from tether.daemon.session import MAX_CONTROL_BACKLOG, AgentSession
from tether.daemon.store import PushItem
from tether.protocol.codec import MSGPACK, error_frame
from tether.protocol.errors import ErrorCode, ProtocolError


class _Broker:
    def __init__(self) -> None:
        self.stats = Stats()


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


async def test_a_delivery_ended_while_the_rest_of_the_queue_is_read_is_not_pushed() -> None:
    s = session(window=10)
    s.offer_first([item(1), item(2)])  # the first page goes out while the rest is read
    assert sorted(s.queued_ids) == [1, 2] and s.ended_while_loading is not None
    s.cancel(1, "cancelled")  # queued: withdrawn at once
    s.cancel(4, "expired")  # in the rest, ended after that read began: it may still list it
    s.offer_loaded([item(3), item(4)])
    assert sorted(s.queued_ids) == [2, 3] and s.ended_while_loading is None
    assert [i.delivery_id for i in s._take()] == [2, 3]
