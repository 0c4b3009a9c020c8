"""The push window counts runs: a late report about an earlier run of a polling delivery
frees no room, so the window is never overrun."""

from __future__ import annotations

from typing import Any

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
    s.acked([(1, 1)])
    assert s._take() == []
    s.acked([(1, 2)])
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
