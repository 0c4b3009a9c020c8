"""A session over its frame budget is paused, on the daemon's clock, until its debt is paid
or its connection closes (``peer.Pacing``)."""

from __future__ import annotations

import asyncio
from typing import Any

from clocks import ArmingClock

from tether.daemon.config import Config
from tether.daemon.metrics import Stats
from tether.daemon.peer import Pacing, peer_left
from tether.protocol.errors import ErrorCode
from tether.protocol.frames import Error, Frame

WAIT = 5.0
"""Seconds a test waits for the session to react before it fails (never a synchronisation sleep)."""


class _Transport:
    def get_extra_info(self, name: str) -> Any:
        return None  # no socket to look at: the peer is taken to be there


class _Connection:
    """What pacing needs of a WebSocket connection."""

    def __init__(self) -> None:
        self.transport = _Transport()
        self.closed = asyncio.Event()

    async def wait_closed(self) -> None:
        await self.closed.wait()


def pacing(rate: float = 10.0, burst: int = 10) -> tuple[Pacing, ArmingClock, Stats]:
    clock, stats = ArmingClock(100.0), Stats()
    return Pacing(Config(max_frames_per_second=rate, frame_burst=burst), clock, stats), clock, stats


async def test_a_session_over_its_budget_is_paused_until_its_debt_is_paid() -> None:
    p, clock, stats = pacing()
    ws: Any = _Connection()
    budget = p.budget()
    told: list[Frame] = []

    async def tell(frame: Frame) -> None:
        told.append(frame)

    await p.pace(ws, budget, 10, 0, tell)  # the burst: no pause
    assert (told, stats.throttled, p.paused) == ([], 0, set())
    paused = asyncio.create_task(p.pace(ws, budget, 20, 0, tell))  # 20 over: 2 s at 10 a second
    await clock.waiting()
    assert ws in p.paused and stats.throttled == 1 and len(told) == 1
    assert isinstance(told[0], Error) and told[0].code == ErrorCode.RATE_LIMITED and told[0].retry_after == 2.0
    clock.advance(1.9)
    await clock.waiting()  # it looked, and waits again: still in debt
    assert not paused.done()
    clock.advance(0.2)
    async with asyncio.timeout(WAIT):
        await paused
    assert p.paused == set()


async def test_a_connection_that_closes_ends_its_pause_at_once() -> None:
    p, clock, _ = pacing()
    ws: Any = _Connection()

    async def tell(frame: Frame) -> None:
        return None

    paused = asyncio.create_task(p.pace(ws, p.budget(), 1000, 0, tell))  # ~100 s of debt
    await clock.waiting()
    ws.closed.set()
    async with asyncio.timeout(WAIT):
        await paused
    assert p.paused == set() and clock.now == 100.0


class _ClosedSocket:
    """What uvloop hands out for a connection closed while a pause looked at it."""

    def getsockopt(self, level: int, option: int, size: int) -> bytes:
        raise ValueError("negative file descriptor")


class _ClosedTransport:
    def get_extra_info(self, name: str) -> Any:
        return _ClosedSocket() if name == "socket" else None


def test_a_connection_closed_while_its_peer_is_looked_at_has_left() -> None:
    """Found by the session fuzzing: the look raised, and tetherd logged the session as crashed."""
    ws: Any = _Connection()
    ws.transport = _ClosedTransport()
    assert peer_left(ws) is True
