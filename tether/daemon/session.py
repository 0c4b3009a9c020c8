"""One open agent session: what it still has to push, and the window of what is in flight.

Push order is highest priority first, then oldest task (DESIGN "push on connect"). At most
``window`` deliveries are unacknowledged at once; each ``ack`` frees room and wakes the
pusher. Control frames (cancel, committed, errors) jump the queue.

The pusher is the only coroutine that writes to the socket, so frames never interleave;
everything else (the reader, operations applying effects) only queues and wakes it. Time
comes from the daemon's :class:`~.clock.Clock`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import heapq
import logging
from collections.abc import Callable

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from ..protocol.codec import Codec, encode_batch, from_msgpack
from ..protocol.frames import Cancel, Drained, Error, Frame, Task
from ..protocol.session import batches, committed
from .clock import Clock, Handle
from .effects import PushItem, Ref
from .metrics import Stats
from .store import StoreError

log = logging.getLogger("tether.session")

END_GRACE = 2.0
"""Seconds a session ended by the daemon (its agent revoked, removed, merged) has to take
its last frames before its connection is cut (a peer that does not read holds none open)."""

MAX_CONTROL_BACKLOG = 256
"""Control frames waiting to be written past which error replies are dropped (cancels never are)."""

FIRST_PAGE = 1000
"""How many of its queued deliveries a session reads before it starts pushing; the rest
are read while the first ones go out, so the first task of a long queue goes out at once
(docs/performance.md, "First page")."""

SENT_MARK_DELAY = 5.0
"""Seconds a pushed delivery may stay unacknowledged before the store is told it is ``sent``.
An agent acknowledges within milliseconds, and its ack then writes ``queued -> acked`` with
the push time as ``sent_at``: one state change per push instead of two. Only a push still
unacknowledged after this delay (or when the session ends) is written as ``sent``; the
delay covers the last acks of a fan-out to 10,000 agents (docs/performance.md)."""


class SentMarks:
    """When each session's oldest unmarked push is due its ``sent`` mark
    (:data:`SENT_MARK_DELAY`), and the write of the marks: one timer for all the sessions
    of a daemon, not one per session and push (a fan-out to 10,000 online agents would arm
    10,000; docs/performance.md)."""

    __slots__ = ("_due", "_seq", "_sweeping", "_timer", "clock", "write")

    SLACK = 0.005
    """A sweep also marks what is due this much later (a timer may fire a little early)."""

    def __init__(self, clock: Clock, write: Callable[[list[int], float], None]) -> None:
        self.clock = clock
        self.write = write
        """Writes ``queued -> sent`` for these deliveries, pushed at that time (fire and forget)."""
        self._due: list[tuple[float, int, AgentSession]] = []
        self._seq = 0
        self._sweeping = False
        self._timer: Handle | None = None

    def __len__(self) -> int:
        return len(self._due)

    def add(self, session: AgentSession, due: float) -> None:
        """Call ``session.mark_sent()`` once the clock has reached ``due``."""
        self._seq += 1
        heapq.heappush(self._due, (due, self._seq, session))
        if self._sweeping:
            return  # the sweep arms the timer when it is done
        if self._timer is None or self._due[0][1] == self._seq:  # none armed, or this one is due first
            self._arm()

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.clock.call_at(self._due[0][0], self._sweep)

    def _sweep(self) -> None:
        self._timer = None
        self._sweeping = True
        try:
            cutoff, due = self.clock.time() + self.SLACK, self._due
            while due and due[0][0] <= cutoff:
                heapq.heappop(due)[2].mark_sent(now=cutoff)  # what it adds back is due later
        finally:
            self._sweeping = False
        if self._due:
            self._arm()


PUSH_BATCH_BYTES = 256 * 1024
"""Most bytes of task frames tetherd puts in one ``batch`` (a task bigger than that goes in
a message of its own): far below what agents take in one message (4 MiB by default)."""


async def send_frame(ws: ServerConnection, codec: Codec, frame: Frame) -> None:
    await ws.send(codec.encode(frame), text=not codec.binary)


class AgentSession:
    __slots__ = (
        "agent_id", "batch", "clock", "codec", "committed", "control", "drained", "dropped", "ended_while_loading",
        "ending", "heap", "holding", "in_flight", "mark_due", "marks", "queued_ids", "session_id", "state_reports",
        "stats", "unmarked", "wake", "window", "ws",
    )

    def __init__(
        self, ws: ServerConnection, codec: Codec, agent_id: str, session_id: str, window: int,
        holding: set[Ref], marks: SentMarks, stats: Stats, *, batch: bool = False, drained: bool = False,
    ) -> None:
        self.ws = ws
        self.codec = codec
        self.agent_id = agent_id
        self.session_id = session_id
        self.window = window
        self.marks = marks
        self.stats = stats
        self.clock = marks.clock
        self.batch = batch
        """The agent announced the ``batch`` feature: a burst of tasks goes as one message."""
        self.drained: bool | None = False if drained else None
        """The agent asked to be told when its queue is pushed to the end (``drained``, a
        ``tether-agent once``): whether it was told since the last delivery was offered.
        None: it did not ask."""
        self.holding = holding
        """Runs the agent told us it holds: never pushed again in this session."""
        self.heap: list[tuple[int, int, int, PushItem]] = []
        self.queued_ids: set[int] = set()
        self.dropped: set[int] = set()
        self.in_flight: dict[int, tuple[int, float]] = {}
        """Deliveries pushed and not yet acknowledged, with the run pushed (a delivery has one
        run on the wire at a time: a late report about an earlier run frees no room) and when."""
        self.unmarked: list[tuple[float, list[int]]] = []
        """Pushes (time, delivery ids) not yet written as ``sent``, oldest first: see
        :data:`SENT_MARK_DELAY`. (A list, not a deque: a deque costs ~600 bytes even when
        it holds one push, and 10,000 sessions each hold one in a connect storm.)"""
        self.mark_due = False
        """The daemon's :class:`SentMarks` will call :meth:`mark_sent` (there are unmarked pushes)."""
        self.ended_while_loading: set[int] | None = set()
        """Deliveries ended while the session's first read of its queue was under way (that
        read may still list them); None once it was offered (:meth:`offer_loaded`)."""
        self.control: collections.deque[Frame] = collections.deque()
        self.committed: list[Ref] = []
        self.wake = asyncio.Event()
        self.ending: tuple[int, str, Error | None] | None = None
        """Set by :meth:`end`: the close code, reason and error to end the session with."""
        self.state_reports = 0
        """State reports taken in this session: the first one's configuration is checked
        against the desired one (a drifted agent is sent it)."""

    def end(self, code: int, reason: str, error: Error | None = None) -> None:
        """End the session: push no more deliveries, write the control frames queued before
        (the cancels of a removed agent's deliveries), then ``error`` if given, and close with
        ``code``. A peer that does not read is cut off after :data:`END_GRACE` seconds."""
        if self.ending is not None:
            return
        self.ending = (code, reason, error)
        self.heap.clear()
        self.queued_ids.clear()
        self.wake.set()
        self.clock.call_at(self.clock.time() + END_GRACE, self._abort)

    def _abort(self) -> None:
        if self.ws.transport is not None and not self.ws.transport.is_closing():
            self.ws.transport.abort()

    def offer(self, items: list[PushItem]) -> None:
        """Queue deliveries for pushing (duplicates and held ones are ignored)."""
        if self.ending is not None:
            return
        added = False
        for item in items:
            d_id = item.delivery_id
            if d_id in self.queued_ids or d_id in self.in_flight or (d_id, item.run) in self.holding:
                continue
            self.queued_ids.add(d_id)
            heapq.heappush(self.heap, (-item.priority, item.task_id, d_id, item))
            added = True
        if added:
            if self.drained:
                self.drained = False
            self.wake.set()

    def offer_first(self, items: list[PushItem]) -> None:
        """Offer the first page of the session's queue, less what ended meanwhile; the
        rest is still being read (:meth:`offer_loaded` ends the loading)."""
        ended = self.ended_while_loading or set()
        self.offer([item for item in items if item.delivery_id not in ended] if ended else items)

    def offer_loaded(self, items: list[PushItem]) -> None:
        """Offer what the store listed when the session opened (all of it, or the rest
        after the first page), less what ended meanwhile; the loading is over."""
        self.offer_first(items)
        self.ended_while_loading = None
        if self.drained is not None:
            self.wake.set()  # an empty queue is drained too: say so

    def withdraw(self, delivery_id: int) -> bool:
        """Forget a delivery that ended (cancelled/expired). True if it was never pushed."""
        if self.ended_while_loading is not None:
            self.ended_while_loading.add(delivery_id)
        self.in_flight.pop(delivery_id, None)
        if delivery_id in self.queued_ids:
            self.queued_ids.discard(delivery_id)
            self.dropped.add(delivery_id)
            return True
        return False

    def acked(self, refs: list[Ref], sent_at: dict[int, float]) -> None:
        """Free the slots of acknowledged runs; their push times go into ``sent_at``."""
        if self._release(refs, sent_at):
            self.wake.set()

    def _release(self, refs: list[Ref], sent_at: dict[int, float] | None = None) -> bool:
        """Free the window slots of these runs (and give their push times to ``sent_at``);
        True if any was in flight."""
        in_flight, freed = self.in_flight, False
        for delivery_id, run in refs:
            pushed = in_flight.get(delivery_id)
            if pushed is not None and pushed[0] == run:
                del in_flight[delivery_id]
                if sent_at is not None:
                    sent_at[delivery_id] = pushed[1]
                freed = True
        return freed

    def _pushed(self, at: float, ids: list[int]) -> None:
        self.unmarked.append((at, ids))
        if not self.mark_due:
            self._mark_after(at)

    def _mark_after(self, at: float) -> None:
        """Have the daemon's :class:`SentMarks` call :meth:`mark_sent` once a push made at
        ``at`` is due its mark."""
        self.mark_due = True
        self.marks.add(self, at + SENT_MARK_DELAY)

    def mark_sent(self, *, everything: bool = False, now: float | None = None) -> None:
        """Write as ``sent`` the pushes older than :data:`SENT_MARK_DELAY` at ``now`` (by
        default the time) that are still unacknowledged; ``everything``: all of them, the
        session is ending."""
        self.mark_due = False
        cutoff = (self.clock.time() if now is None else now) - SENT_MARK_DELAY
        unmarked, in_flight = self.unmarked, self.in_flight
        due = len(unmarked) if everything else next(
            (i for i, (at, _) in enumerate(unmarked) if at > cutoff), len(unmarked))
        for at, ids in unmarked[:due]:
            waiting = [d for d in ids if (p := in_flight.get(d)) is not None and p[1] == at]
            if waiting:
                self.marks.write(waiting, at)
        del unmarked[:due]
        if unmarked:
            self._mark_after(unmarked[0][0])

    def settled(self, refs: list[Ref]) -> None:
        """Results committed: tell the agent (batched into one frame)."""
        self.committed.extend(refs)
        if self.holding:
            self.holding.difference_update(refs)
        self._release(refs)
        self.wake.set()

    def send_control(self, frame: Frame) -> None:
        self.control.append(frame)
        self.wake.set()

    def tell(self, frame: Frame) -> None:
        """Queue an error reply to a bad frame, unless the peer is not reading what it is
        sent (then it would only pile up in memory: it is counted and dropped)."""
        if len(self.control) >= MAX_CONTROL_BACKLOG:
            self.stats.untold += 1
            return
        self.send_control(frame)

    def cancel(self, delivery_id: int, reason: str) -> None:
        if not self.withdraw(delivery_id):
            self.send_control(Cancel(delivery_id=delivery_id, reason=reason))  # type: ignore[arg-type]

    def _take(self) -> list[PushItem]:
        """The next deliveries the window has room for, now in flight (and due a sent mark)."""
        now = self.clock.time()
        room = self.window - len(self.in_flight)
        batch: list[PushItem] = []
        while room > 0 and self.heap:
            *_, d_id, item = heapq.heappop(self.heap)
            if d_id in self.dropped:
                self.dropped.discard(d_id)
                continue
            self.queued_ids.discard(d_id)
            self.in_flight[d_id] = (item.run, now)
            batch.append(item)
            room -= 1
        if batch:
            self._pushed(now, [item.delivery_id for item in batch])
        return batch

    async def pusher(self) -> None:
        """Write frames until the session ends (cancelled by its owner, or the peer left)."""
        try:
            with contextlib.suppress(ConnectionClosed):
                await self._push_forever()
        finally:
            with contextlib.suppress(StoreError):  # the daemon is stopping: the store is closed
                self.mark_sent(everything=True)

    async def _push_forever(self) -> None:
        codec, ws = self.codec, self.ws
        stats = self.stats
        while True:
            await self.wake.wait()
            self.wake.clear()
            while self.control:
                await send_frame(ws, codec, self.control.popleft())
                stats.frames_out += 1
            if self.ending is not None:
                code, reason, error = self.ending
                if error is not None:
                    await send_frame(ws, codec, error)
                await ws.close(code, reason)
                return
            if self.committed:
                refs, self.committed = self.committed, []
                for frame in committed(refs):
                    await send_frame(ws, codec, frame)
                    stats.frames_out += 1
            batch = self._take()
            if not batch:
                await self._tell_drained()
                continue
            blobs = [
                codec.encode(Task(
                    delivery_id=item.delivery_id, task_id=item.task_id, command=item.command,
                    args=from_msgpack(item.args, codec), priority=item.priority,
                    expires_at=item.expires_at, run=item.run, poll_deadline=item.poll_deadline,
                    poll_timeout=item.poll_timeout,
                ))
                for item in batch
            ]
            if self.batch and len(blobs) > 1:
                for chunk in batches(blobs, PUSH_BATCH_BYTES):
                    await ws.send(encode_batch(codec, chunk) if len(chunk) > 1 else chunk[0], text=not codec.binary)
            else:
                for blob in blobs:
                    await ws.send(blob, text=not codec.binary)
            stats.frames_out += len(batch)
            stats.pushed += len(batch)
            await self._tell_drained()

    async def _tell_drained(self) -> None:
        """Send ``drained`` to an agent that asked for it, once its queue is read to the end
        and every delivery of it pushed (once per time the queue runs empty)."""
        if self.drained is False and self.ended_while_loading is None and not self.queued_ids:
            self.drained = True
            await send_frame(self.ws, self.codec, Drained())
            self.stats.frames_out += 1
