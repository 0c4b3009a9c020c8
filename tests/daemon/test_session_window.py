"""The push window counts runs: a late report about an earlier run of a polling delivery
frees no room, so the window is never overrun."""

from __future__ import annotations

import asyncio

from clocks import ArmingClock
from sessions_data import online
from store_data import NOW

from tether.daemon.clock import SystemClock
from tether.daemon.effects import PushItem
from tether.daemon.metrics import Stats
from tether.daemon.operations import Operations
from tether.daemon.session import MAX_CONTROL_BACKLOG, SENT_MARK_DELAY, AgentSession, SentMarks
from tether.daemon.store.sqlite import SQLiteStore
from tether.protocol import pack
from tether.protocol.codec import MSGPACK, decode_from_daemon, error_frame, unbatch
from tether.protocol.errors import ErrorCode, ProtocolError
from tether.protocol.frames import Batch, Cancel, Drained

T0 = 1000.0


class Marked:
    """Where the sent marks are written: ``(delivery ids, pushed at)``, in order."""

    def __init__(self) -> None:
        self.marked: list[tuple[list[int], float]] = []

    def __call__(self, delivery_ids: list[int], pushed_at: float) -> None:
        self.marked.append((delivery_ids, pushed_at))


def session(window: int, marks: SentMarks | None = None, agent_id: str = "a1") -> AgentSession:
    marks = marks if marks is not None else SentMarks(ArmingClock(T0), Marked())
    return AgentSession(None, MSGPACK, agent_id, "s1", window, set(), marks, Stats())  # type: ignore[arg-type]


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
    assert s.stats.untold == 50
    s.cancel(99, "cancelled")  # a cancel is never dropped
    assert len(s.control) == MAX_CONTROL_BACKLOG + 1


async def test_only_a_push_left_unacknowledged_is_written_as_sent() -> None:
    clock, marked = ArmingClock(T0), Marked()
    s = session(window=4, marks=SentMarks(clock, marked))
    s.offer([item(1), item(2), item(3)])
    pushed = s._take()
    sent_at: dict[int, float] = {}
    s.acked([(1, 1), (3, 1)], sent_at)  # acknowledged at once: the ack writes the push time
    assert sent_at == {1: T0, 3: T0} and len(pushed) == 3
    clock.advance(SENT_MARK_DELAY - 0.1)
    assert marked.marked == []
    clock.advance(0.2)
    assert marked.marked == [([2], T0)]  # only 2 waited past the delay, marked with its push time
    s.offer([item(4)])
    s._take()
    s.mark_sent(everything=True)  # the session ends: what is still unacknowledged is marked now
    assert [ids for ids, _ in marked.marked] == [[2], [4]]


async def test_the_sessions_of_a_daemon_share_one_timer_for_their_sent_marks() -> None:
    """A fan-out to 100 online sessions arms one timer, not 100; each session's unacknowledged
    push is marked once its own delay is over, a later push of a session later."""
    clock, marked = ArmingClock(T0), Marked()
    marks = SentMarks(clock, marked)
    sessions = [session(4, marks, f"a{i}") for i in range(100)]
    for i, s in enumerate(sessions):
        s.offer([item(i)])
        s._take()
    assert clock.arms == [T0 + SENT_MARK_DELAY] and len(marks) == 100
    for i, s in enumerate(sessions[:50]):
        s.acked([(i, 1)], {})  # acknowledged in time: never written as sent
    clock.advance(SENT_MARK_DELAY / 2)
    late = sessions[0]
    late.offer([item(1000)])
    late._take()  # a second push of a session already due a mark: due at 1.5 delays
    clock.advance(SENT_MARK_DELAY * 0.75)
    assert sorted(ids[0] for ids, _ in marked.marked) == list(range(50, 100))
    clock.advance(SENT_MARK_DELAY * 0.75)
    assert marked.marked[-1] == ([1000], T0 + SENT_MARK_DELAY / 2) and len(marked.marked) == 51
    assert len(marks) == 0 and len(clock.arms) == 2  # for the first pushes, then for the late one


async def test_a_sweep_that_fires_a_little_early_marks_what_is_due() -> None:
    """A timer may fire a little before its time: the push due then is marked by that sweep
    (not put back, due at once, for ever)."""
    clock, marked = ArmingClock(T0), Marked()
    marks = SentMarks(clock, marked)
    s = session(4, marks)
    s.offer([item(1)])
    s._take()  # pushed at T0: due its mark at T0 + the delay
    clock.now = T0 + SENT_MARK_DELAY - SentMarks.SLACK / 2
    marks._sweep()
    assert marked.marked == [([1], T0)] and len(marks) == 0 and not s.mark_due


async def test_a_delivery_ended_while_the_rest_of_the_queue_is_read_is_not_pushed() -> None:
    s = session(window=10)
    s.offer_first([item(1), item(2)])  # the first page goes out while the rest is read
    assert sorted(s.queued_ids) == [1, 2] and s.ended_while_loading is not None
    s.cancel(1, "cancelled")  # queued: withdrawn at once
    s.cancel(4, "expired")  # in the rest, ended after that read began: it may still list it
    s.offer_loaded([item(3), item(4)])
    assert sorted(s.queued_ids) == [2, 3] and s.ended_while_loading is None
    assert [i.delivery_id for i in s._take()] == [2, 3]


async def test_a_delivery_ended_while_the_session_reads_its_queue_is_not_pushed(store: SQLiteStore) -> None:
    session = online(Operations(store, SystemClock()).push, "a")
    listed = [PushItem(d, d, "a", "echo", pack({}), 1, NOW + 60) for d in (1, 2)]
    session.cancel(1, "expired")  # committed meanwhile; the listing read before it
    session.offer_loaded(listed)
    assert sorted(session.queued_ids) == [2]
    session.cancel(2, "cancelled")  # later, the usual way: withdrawn from the queue
    assert session.queued_ids == set() and session.ended_while_loading is None


class Wire:
    """A session's connection as its pusher sees it: what it writes, decoded, in a queue."""

    transport = None

    def __init__(self) -> None:
        self.frames: asyncio.Queue[object] = asyncio.Queue()

    async def send(self, data: bytes, text: bool = False) -> None:
        frame = decode_from_daemon(data)
        for each in unbatch(frame, True, to_daemon=False) if isinstance(frame, Batch) else [frame]:
            self.frames.put_nowait(each)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        pass

    async def next(self) -> object:
        async with asyncio.timeout(5):
            return await self.frames.get()


def drained_session(window: int, wire: Wire, *, drained: bool = True) -> AgentSession:
    return AgentSession(wire, MSGPACK, "a1", "s1", window, set(), SentMarks(ArmingClock(T0), Marked()),  # type: ignore[arg-type]
                        Stats(), drained=drained)


async def test_an_agent_that_asked_is_told_once_its_queue_is_pushed_to_the_end() -> None:
    """``tether-agent once`` leaves after ``drained``: never while the window holds back part
    of the queue, and again after each delivery offered later."""
    wire = Wire()
    s = drained_session(2, wire)
    s.offer_loaded([item(1), item(2), item(3)])
    pusher = asyncio.create_task(s.pusher())
    try:
        assert [(await wire.next()).delivery_id for _ in range(2)] == [1, 2]  # type: ignore[attr-defined]
        s.acked([(1, 1)], {})
        assert (await wire.next()).delivery_id == 3  # type: ignore[attr-defined]
        assert isinstance(await wire.next(), Drained)
        s.offer([item(4)])
        s.acked([(2, 1), (3, 1)], {})
        assert (await wire.next()).delivery_id == 4  # type: ignore[attr-defined]
        assert isinstance(await wire.next(), Drained)
        assert wire.frames.empty()
    finally:
        pusher.cancel()
        await asyncio.gather(pusher, return_exceptions=True)


async def test_an_empty_queue_is_drained_at_once_and_an_agent_that_did_not_ask_is_never_told() -> None:
    wire = Wire()
    s = drained_session(2, wire)
    s.offer_loaded([])
    quiet_wire = Wire()
    quiet = drained_session(2, quiet_wire, drained=False)
    quiet.offer_loaded([item(1)])
    pushers = [asyncio.create_task(s.pusher()), asyncio.create_task(quiet.pusher())]
    try:
        assert isinstance(await wire.next(), Drained)
        assert (await quiet_wire.next()).delivery_id == 1  # type: ignore[attr-defined]
        quiet.acked([(1, 1)], {})
        quiet.send_control(Cancel(delivery_id=9))  # the pusher runs again: still nothing more
        assert isinstance(await quiet_wire.next(), Cancel)
        assert quiet_wire.frames.empty()
    finally:
        for pusher in pushers:
            pusher.cancel()
        await asyncio.gather(*pushers, return_exceptions=True)
