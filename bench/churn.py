"""Abrupt disconnects for the soak: every simulated agent reaches tetherd through its own
relay port in its worker process, so the worker can cut one agent's connection at will.

A cut resets both TCP connections of the pair, the agent's and tetherd's (``SO_LINGER`` 0,
then close: RST, not FIN), with whatever was in flight, often in the middle of a frame.
Neither side is told anything beforehand: the agent's client sees the connection lost
(1006) and reconnects by its own backoff (0-0.2 s after a welcomed session, more if that
fails); tetherd sees the reset and ends the session. The relay copies bytes and nothing
else (no parsing), on the worker's event loop, listening and connecting on 127.0.0.1 only.

Which agents are cut is seeded: each worker draws its flaky agents (``flaky_share`` of its
own) and every ``every`` seconds cuts ``cut_share`` of its agents (at least one) among the
flaky ones connected at that moment, from ``random.Random(f"{seed}/{worker}")``.
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
import time
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlsplit

_RST = struct.pack("ii", 1, 0)


@dataclass(frozen=True)
class Churn:
    """How a fleet's connections are cut (picklable: it goes to the worker processes)."""

    seed: int
    every: float = 3.0
    """Seconds between two waves of cuts (per worker; the workers' waves are not aligned)."""
    flaky_share: float = 0.2
    """Share of each worker's agents that may be cut (drawn once, seeded)."""
    cut_share: float = 0.01
    """Share of each worker's agents cut per wave (at least one), among its flaky ones."""


class _Side(asyncio.Protocol):
    """One TCP connection of a pair; what it reads is written to the other one."""

    def __init__(self, link: _Link) -> None:
        self.link = link
        self.transport: asyncio.Transport | None = None
        self.peer: _Side | None = None
        self.early: list[bytes] = []
        """What the agent sent before tetherd's side was open (its HTTP upgrade request)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not an asyncio.Transport subclass
        self.link.made(self)

    def data_received(self, data: bytes) -> None:
        peer = self.peer.transport if self.peer is not None else None
        if peer is None:
            self.early.append(data)
        elif not peer.is_closing():
            peer.write(data)

    def eof_received(self) -> bool:
        self.link.close()  # the peer closed (websockets' close handshake): pass the close on
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.link.close()

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None and not self.peer.transport.is_closing():
            self.peer.transport.resume_reading()


class _Link:
    """One agent connection through the relay: ``down`` (from the agent), ``up`` (to tetherd)."""

    def __init__(self, relay: Relay, agent: int) -> None:
        self.relay, self.agent = relay, agent
        self.down, self.up = _Side(self), _Side(self)
        self.down.peer, self.up.peer = self.up, self.down
        self.closed = False

    def made(self, side: _Side) -> None:
        if self.closed:  # the agent went away while tetherd's side was being opened
            assert side.transport is not None
            side.transport.close()
        elif side is self.down:
            self.relay.opening.add(asyncio.get_running_loop().create_task(self._connect()))
        else:
            self.relay.links[self.agent] = self
            assert side.transport is not None
            for data in self.down.early:
                side.transport.write(data)
            self.down.early.clear()

    async def _connect(self) -> None:
        try:
            await asyncio.get_running_loop().create_connection(lambda: self.up, self.relay.host, self.relay.port)
        except OSError:
            self.relay.upstream_failures += 1
            self.close()
        finally:
            task = asyncio.current_task()
            if task is not None:
                self.relay.opening.discard(task)

    def _detach(self) -> bool:
        """Mark the link closed and forget it; False if it was closed already."""
        if self.closed:
            return False
        self.closed = True
        if self.relay.links.get(self.agent) is self:
            del self.relay.links[self.agent]
        return True

    def close(self) -> None:
        """Close both connections the ordinary way (pending bytes are written, then FIN)."""
        if not self._detach():
            return
        for side in (self.down, self.up):
            if side.transport is not None:
                side.transport.close()

    def reset(self) -> None:
        """Cut both connections at once: RST to the agent and to tetherd, nothing flushed."""
        if not self._detach():
            return
        for side in (self.down, self.up):
            if side.transport is None:
                continue
            sock = side.transport.get_extra_info("socket")
            try:
                if sock is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RST)
            except OSError:
                pass  # already gone
            side.transport.abort()


class Relay:
    """One listening port per agent on 127.0.0.1, each relaying to tetherd's ``server`` URL."""

    def __init__(self, server: str) -> None:
        parts = urlsplit(server)
        if parts.hostname not in ("127.0.0.1", "localhost", "::1") or parts.port is None:
            raise ValueError(f"the relay only forwards to a loopback tetherd, not {server!r}")
        self.scheme, self.host, self.port = parts.scheme, parts.hostname, parts.port
        self.servers: list[asyncio.Server] = []
        self.links: dict[int, _Link] = {}
        """Agent index -> its established pair, if it has one now."""
        self.opening: set[asyncio.Task[None]] = set()
        self.cuts = 0
        self.waves = 0
        self.short_waves = 0
        """Waves that found fewer flaky agents connected than they were to cut."""
        self.upstream_failures = 0

    async def listen(self, agents: int) -> list[str]:
        """Open one port per agent; their URLs, in agent order."""
        loop = asyncio.get_running_loop()
        urls: list[str] = []
        for agent in range(agents):
            server = await loop.create_server(lambda agent=agent: _Link(self, agent).down, "127.0.0.1", 0,
                                              backlog=16)
            self.servers.append(server)
            urls.append(f"{self.scheme}://127.0.0.1:{server.sockets[0].getsockname()[1]}")
        return urls

    async def churn(self, spec: Churn, worker: int, agents: int, go: Any, stop: Any, max_seconds: float) -> None:
        """Wait for ``go`` (a multiprocessing Event), then cut a wave every ``spec.every``
        seconds until ``stop`` is set or ``max_seconds`` have passed."""
        rng = random.Random(f"{spec.seed}/{worker}")
        flaky = sorted(rng.sample(range(agents), max(1, round(agents * spec.flaky_share)))) if agents else []
        per_wave = max(1, round(agents * spec.cut_share))
        deadline = time.monotonic() + max_seconds
        while not go.is_set():
            if stop.is_set() or time.monotonic() > deadline:
                return
            await asyncio.sleep(0.05)
        next_at = time.monotonic() + spec.every
        while not stop.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(min(0.25, max(0.0, next_at - time.monotonic())))
            if time.monotonic() < next_at or stop.is_set():
                continue
            next_at += spec.every
            connected = [a for a in flaky if a in self.links]
            victims = rng.sample(connected, min(per_wave, len(connected)))
            self.waves += 1
            self.short_waves += len(victims) < per_wave
            for agent in victims:
                self.links[agent].reset()
                self.cuts += 1

    async def close(self) -> None:
        for server in self.servers:
            server.close()
        for link in list(self.links.values()):
            link.close()
        for task in list(self.opening):
            task.cancel()
        if self.servers:
            await asyncio.wait([asyncio.ensure_future(s.wait_closed()) for s in self.servers], timeout=10)

    def figures(self) -> dict[str, int]:
        return {"cuts": self.cuts, "cut_waves": self.waves, "short_waves": self.short_waves,
                "relay_upstream_failures": self.upstream_failures}


__all__ = ["Churn", "Relay"]
