"""The agent's frames for the daemon, in order, and when each message goes.

The :class:`~tether.agent.runner.Runner` owns the outflow and puts into it what it produces
(the ``ack`` of each burst it journals, start reports, progress, results), saying which frame
is urgent; it also tells the outflow whether more frames are due within moments (its runs
wait for a slot, or were just started, or returned and wait for their finish to commit).
The client puts the outbox it re-sends and the end of the session, and its writer only takes
messages out (:meth:`Outflow.next_message`) and sends them. Frames put while no session is
open are dropped: results wait in the journal's outbox, progress is best effort.

Batches (with a daemon that speaks ``batch``): the frames waiting when the writer wakes up
go out as one ``batch`` message, of at most :data:`BATCH_MAX_BYTES` (a frame alone as
itself); to an older daemon every frame goes in its own message. While more frames are due,
the writer lets them gather first: up to :data:`HOLD_FRAMES` frames, for at most
:data:`HOLD_SECONDS`; a frame after which nothing is due, an urgent one, or the end sends
at once. They then share one message, one commit in the daemon and one ``committed`` back.
An ``ack`` is urgent while runs wait for a slot (it frees the daemon's window); an idle
agent's ack goes with the first frame of the runs it started (a quick command's result, a
slow one's start report).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterable

BATCH_MAX_BYTES = 64 * 1024
"""Most bytes of frames the agent puts in one ``batch``: far below any daemon's message
limit (tetherd's ``max_frame_bytes``, 1 MiB by default), so batching never makes a message
too big that would have passed alone. A bigger frame is sent in its own message."""

HOLD_FRAMES = 64
"""While more frames are due, the writer sends once this many frames are waiting (a frame
over ``BATCH_MAX_BYTES / HOLD_FRAMES`` sends at once, so a batch stays under
:data:`BATCH_MAX_BYTES`) ..."""
HOLD_SECONDS = 0.005
"""... or once the first of them has waited this long. Chosen on the drain benchmark
(docs/performance.md): a few results per message become a few dozen, for at most 5 ms more
per result of an agent that has runs waiting anyway."""

_END = None
"""In the queue: close the session, after the frames put before."""


class Outflow:
    """A FIFO of encoded frames, one writer's worth of messages at a time (see the module doc).

    ``due``: whether frames about runs will follow within moments (the runner's answer);
    asked when a frame is put and when the writer wakes up."""

    __slots__ = ("_arrived", "_carried", "_due", "_flush", "_frames", "_open")

    def __init__(self, due: Callable[[], bool]) -> None:
        self._due = due
        self._frames: deque[bytes | None] = deque()
        self._open = False
        self._arrived = asyncio.Event()
        """Set when a frame (or the end) is put: the writer has something to take."""
        self._flush = asyncio.Event()
        """Set when the writer must not hold what waits any longer."""
        self._carried = False
        """The last message left frames behind (it was full): the next one goes without a hold."""

    @property
    def is_open(self) -> bool:
        """A session takes the frames put (:meth:`open`)."""
        return self._open

    # -- the producers: the runner, and the client's re-sends ------------------------------

    def put(self, blob: bytes, *, urgent: bool = False) -> None:
        """Queue a frame for the open session (else drop it). ``urgent``: the writer must not
        hold it back for more. A frame after which no more are due ends the hold too:
        nothing would join it."""
        if not self._open:
            return
        frames = self._frames
        frames.append(blob)
        self._arrived.set()
        if urgent or len(frames) >= HOLD_FRAMES or len(blob) > BATCH_MAX_BYTES // HOLD_FRAMES or not self._due():
            self._flush.set()

    def nothing_due(self) -> None:
        """The runner has no more frames due (it had, and produced none: a run was cancelled
        before its result): what waits goes now."""
        if self._frames:
            self._flush.set()

    # -- the client ------------------------------------------------------------------------

    def open(self, outbox: Iterable[bytes]) -> None:
        """A session opened: take frames from now on, ``outbox`` (results to re-send) first."""
        self._frames.clear()
        self._frames.extend(outbox)
        self._open = True
        self._carried = False
        self._flush.clear()
        if self._frames:
            self._arrived.set()

    def close(self) -> None:
        """The session ended: drop what waits and what is put from now on."""
        self._open = False
        self._frames.clear()

    def end(self) -> None:
        """Close the session cleanly once the frames put before are sent (no-op with no session)."""
        if self._open:
            self._frames.append(_END)
            self._arrived.set()
            self._flush.set()

    async def next_message(self, batching: bool) -> list[bytes] | None:
        """The frames of the next message to send, in order (without ``batching``, one), once
        the hold is over; ``None``: close the session now."""
        frames = self._frames
        hold = batching and not self._carried
        self._carried = False
        while not frames:
            self._arrived.clear()
            await self._arrived.wait()
        first = frames[0]
        if first is _END:
            return None
        if hold and self._due():
            await self._hold()
        self._flush.clear()  # a frame put from here on asks again
        frames.popleft()
        message = [first]
        if not batching:
            return message
        size = len(first)
        while frames:
            more = frames[0]
            if more is _END or size + len(more) > BATCH_MAX_BYTES:
                self._carried = True
                break
            message.append(more)
            size += len(more)
            frames.popleft()
        return message

    async def _hold(self) -> None:
        """Let the frames that are about to follow join this message: until
        :data:`HOLD_FRAMES` wait, an urgent frame is put, no more are due, or
        :data:`HOLD_SECONDS` passed."""
        if self._flush.is_set() or len(self._frames) >= HOLD_FRAMES:
            return  # (an ack is waiting: it goes now, without arming a timer first)
        timer = asyncio.get_running_loop().call_later(HOLD_SECONDS, self._flush.set)
        try:
            await self._flush.wait()
        finally:
            timer.cancel()
