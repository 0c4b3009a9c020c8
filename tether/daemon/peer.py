"""What every session does with its peer: tell it why its session ends, and pace it.

A session ends with an ``error`` frame naming the registry code and then the WebSocket
close with that code (4xxx), never a traceback. A peer over its frame budget
(:class:`.limits.FrameBudget`) is slowed, never cut off and never robbed of a frame: its
socket is not read until the budget refills (TCP pushes back on the peer).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
from collections.abc import Awaitable, Callable

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from ..protocol.codec import Codec, error_frame
from ..protocol.errors import ErrorCode, ProtocolError
from ..protocol.frames import Frame
from ..protocol.session import refusal
from .clock import Clock
from .config import Config
from .limits import FrameBudget
from .metrics import Stats
from .session import send_frame
from .store import StoreError

log = logging.getLogger("tether.server")

STORAGE_RETRY_LATER = ProtocolError(ErrorCode.SERVER_ERROR, "storage unavailable; retry later")
STORAGE_RETRY_SECONDS = 5.0
"""The ``retry_after`` of a session refused because the store failed."""

INLINE_CHECK_BYTES = 64 * 1024
"""A message larger than this has its results (agents, :func:`.reports.check_results`) or
its request's params (consoles) checked in a worker thread; an agent's batches are at most
this big."""

PEER_CHECK_EVERY = 0.25
"""Seconds between two looks, during a session's pause, at whether its peer has left."""

_TCP_ESTABLISHED = 1  # include/net/tcp_states.h


class SessionEnd(Exception):
    """End the session with a session error (4xxx), after telling the peer why."""

    def __init__(self, error: ProtocolError, retry_after: float | None = None) -> None:
        super().__init__(error.message)
        self.error = error
        self.retry_after = retry_after


async def refuse(ws: ServerConnection, codec: Codec, error: ProtocolError, retry_after: float | None = None, *,
                 quiet: bool = False) -> None:
    """Tell the peer why its session ends, and end it. ``quiet``: logged at DEBUG only
    (a failed login: the throttle logs those, once per address and minute)."""
    (log.debug if quiet else log.info)("event=session_refused code=%d name=%s remote=%s message=%r",
                                       error.code, error.code.slug, remote(ws), error.message)
    frame, code, reason = refusal(error, retry_after)
    with contextlib.suppress(ConnectionClosed):
        await send_frame(ws, codec, frame)
        await ws.close(code, reason)


async def store_failed(ws: ServerConnection, codec: Codec, exc: StoreError, context: str = "") -> None:
    """A read or write the session needs failed: the peer is told to come back later."""
    log.error("event=session_store_error%s error=%r", context, exc)
    await refuse(ws, codec, STORAGE_RETRY_LATER, retry_after=STORAGE_RETRY_SECONDS)


class Pacing:
    """Every session's frame budget, and the sessions paused for theirs (a drain cuts
    those: they cannot read a closing handshake)."""

    def __init__(self, config: Config, clock: Clock, stats: Stats) -> None:
        self.config = config
        self.clock = clock
        self.stats = stats
        self.paused: set[ServerConnection] = set()

    def budget(self) -> FrameBudget:
        return FrameBudget(self.config.max_frames_per_second, self.config.frame_burst, self.clock.monotonic())

    async def pace(self, ws: ServerConnection, budget: FrameBudget, frames: int, bad: int,
                   tell: Callable[[Frame], Awaitable[None]]) -> None:
        """Charge ``frames`` (and ``bad`` of them answered with an error) to the session's
        budget; over it, stop reading the session for as long as its debt lasts (telling it
        at most once a second), or until the connection closes or its peer leaves."""
        clock = self.clock
        wait = budget.spend(frames + bad * (self.config.bad_frame_cost - 1), clock.monotonic())
        if wait <= 0:
            return
        self.stats.throttled += 1
        if budget.should_tell(clock.monotonic()):
            await tell(error_frame(ProtocolError(
                ErrorCode.RATE_LIMITED,
                f"more than {self.config.max_frames_per_second:g} frames a second; reading paused",
            ), retry_after=math.ceil(wait * 1000) / 1000))  # whole ms, never 0
        await self._paused(ws, wait)

    async def _paused(self, ws: ServerConnection, seconds: float) -> None:
        """Wait ``seconds`` without reading ``ws``, or until the connection closes, or its
        peer has left (then it is closed, so the session ends at once).

        A session that is not read has its socket paused too, so a peer's close is not read
        either; the kernel knows it all the same: the connection leaves TCP's ESTABLISHED
        state when the peer's FIN or RST arrives, whatever data waits unread before it. That
        is looked at every :data:`PEER_CHECK_EVERY` seconds of the pause."""
        clock = self.clock
        deadline = clock.monotonic() + seconds
        self.paused.add(ws)
        try:
            while (left := deadline - clock.monotonic()) > 0:
                if await _closed_within(ws, clock, min(left, PEER_CHECK_EVERY)):
                    return
                if peer_left(ws):
                    ws.transport.abort()
                    return
        finally:
            self.paused.discard(ws)


async def _closed_within(ws: ServerConnection, clock: Clock, seconds: float) -> bool:
    """Whether the connection closes within ``seconds`` of the clock."""
    looked = asyncio.Event()
    handle = clock.call_at(clock.time() + seconds, looked.set)
    closed = asyncio.ensure_future(ws.wait_closed())
    wake = asyncio.ensure_future(looked.wait())
    try:
        await asyncio.wait((closed, wake), return_when=asyncio.FIRST_COMPLETED)
        return closed.done()
    finally:
        handle.cancel()
        closed.cancel()
        wake.cancel()


def peer_left(ws: ServerConnection) -> bool:
    """The TCP connection under ``ws`` is no longer established (the peer closed or reset
    it, or it was closed meanwhile). Linux only (``TCP_INFO``); elsewhere, False."""
    sock = ws.transport.get_extra_info("socket")
    option = getattr(socket, "TCP_INFO", None)
    if sock is None or option is None:
        return False
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, option, 1)
    except ValueError:  # uvloop's socket of a connection closed meanwhile: "negative file descriptor"
        return True
    except OSError:
        return False
    return bool(info[0] != _TCP_ESTABLISHED)


def remote_host(ws: ServerConnection) -> str:
    try:
        return str(ws.remote_address[0])
    except (TypeError, IndexError):
        return ""


def remote(ws: ServerConnection) -> str:
    try:
        host, port = ws.remote_address[:2]
        return f"{host}:{port}"
    except (TypeError, ValueError):
        return "?"
