"""The raw-websockets baseline: tether's session protocol with no storage, no auth, no broker.

    python -m bench.ws_baseline --per-session K [--arg-bytes B] [--window W]

A minimal websockets + uvloop server that speaks just enough of the agent protocol for the
real :class:`~tether.agent.client.AgentClient` to run against it unchanged: it reads the
``hello``, answers ``welcome``, pushes ``K`` ``task`` frames per session (MessagePack, the
same ``echo`` args the tether scenarios queue) with at most ``W`` unacknowledged, and
answers each ``result`` with a ``committed``. Nothing is written anywhere; tasks are made
up in memory when a session opens. The same port serves ``/metrics`` with the counters the
bench reads from tetherd (``tether_deliveries_total{state="done"}``,
``tether_sessions_open{role="agent"}``, ``tether_frames_total``), so one harness drives
both and the ratio tether / baseline shows what tether's own work (SQLite, group commits,
the broker, authentication) costs on top of websockets and msgspec.

The process runs as tetherd does: uvloop, no compression, listen backlog 4096, garbage
collector frozen after start-up with the same raised thresholds. It logs
``event=listening url=ws://...`` on stderr like tetherd.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import logging
import signal
import sys
import time
from http import HTTPStatus

import msgspec
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request as HTTPRequest
from websockets.http11 import Response as HTTPResponse

from tether.daemon.housekeeping import tune as tune_gc
from tether.protocol import MSGPACK, PROTOCOL_VERSION, ProtocolError, decode_to_daemon
from tether.protocol.frames import Ack, Committed, Frame, Hello, Result, Task, Welcome

LISTEN_BACKLOG = 4096
log = logging.getLogger("bench.ws_baseline")


class Counters:
    __slots__ = ("done", "frames_in", "frames_out", "next_delivery", "sessions", "sessions_total")

    def __init__(self) -> None:
        self.done = 0
        self.frames_in = 0
        self.frames_out = 0
        self.next_delivery = 0
        self.sessions = 0
        self.sessions_total = 0

    def render(self) -> str:
        return (
            f'tether_deliveries_total{{state="done"}} {self.done}\n'
            f'tether_sessions_open{{role="agent"}} {self.sessions}\n'
            f'tether_sessions_opened_total{{role="agent"}} {self.sessions_total}\n'
            f'tether_frames_total{{direction="in"}} {self.frames_in}\n'
            f'tether_frames_total{{direction="out"}} {self.frames_out}\n'
        )


class BaselineSession:
    """One session's queue and window; the pusher is the only writer to the socket."""

    __slots__ = ("committed", "counters", "in_flight", "queue", "wake", "window", "ws")

    def __init__(self, ws: ServerConnection, counters: Counters, tasks: list[tuple[int, msgspec.Raw]],
                 window: int) -> None:
        self.ws = ws
        self.counters = counters
        self.queue = collections.deque(tasks)
        self.window = window
        self.in_flight: set[int] = set()
        self.committed: list[int] = []
        self.wake = asyncio.Event()
        self.wake.set()

    async def push(self) -> None:
        ws, counters = self.ws, self.counters
        with contextlib.suppress(ConnectionClosed):
            while True:
                await self.wake.wait()
                self.wake.clear()
                if self.committed:
                    ids, self.committed = self.committed, []
                    await ws.send(MSGPACK.encode(Committed(delivery_ids=ids)))
                    counters.frames_out += 1
                while self.queue and len(self.in_flight) < self.window:
                    delivery_id, args = self.queue.popleft()
                    self.in_flight.add(delivery_id)
                    await ws.send(MSGPACK.encode(Task(delivery_id=delivery_id, task_id=delivery_id,
                                                      command="echo", args=args)))
                    counters.frames_out += 1

    async def read(self) -> None:
        counters = self.counters
        async for message in self.ws:
            counters.frames_in += 1
            try:
                frame = decode_to_daemon(message)
            except ProtocolError:
                continue
            if isinstance(frame, Ack):
                self.in_flight.difference_update(frame.delivery_ids)
                self.wake.set()
            elif isinstance(frame, Result):
                counters.done += 1
                self.committed.append(frame.delivery_id)
                self.wake.set()


class Baseline:
    def __init__(self, per_session: int, arg_bytes: int, window: int) -> None:
        self.per_session = per_session
        self.window = window
        self.counters = Counters()
        pad = "x" * max(0, arg_bytes - 30)
        self.args = [msgspec.Raw(MSGPACK.encode_value({"n": n, "pad": pad} if pad else {"n": n}))
                     for n in range(per_session)]

    def http(self, connection: ServerConnection, request: HTTPRequest) -> HTTPResponse | None:
        if request.path.split("?", 1)[0] == "/metrics":
            return connection.respond(HTTPStatus.OK, self.counters.render())
        return None

    async def handle(self, ws: ServerConnection) -> None:
        counters = self.counters
        try:
            first = await ws.recv()
            counters.frames_in += 1
            hello: Frame = decode_to_daemon(first)
        except (ConnectionClosed, ProtocolError):
            return
        if not isinstance(hello, Hello) or hello.role != "agent":
            await ws.close(4001, "bad hello")
            return
        await ws.send(MSGPACK.encode(Welcome(version=PROTOCOL_VERSION, role="agent", session_id="baseline",
                                             server_time=time.time(), agent_id=hello.agent_id,
                                             window=self.window)))
        counters.frames_out += 1
        first_id = counters.next_delivery + 1
        counters.next_delivery += self.per_session
        held = set(hello.holding)
        tasks = [(first_id + i, args) for i, args in enumerate(self.args) if first_id + i not in held]
        session = BaselineSession(ws, counters, tasks, self.window)
        counters.sessions += 1
        counters.sessions_total += 1
        try:
            async with asyncio.TaskGroup() as tg:
                pusher = tg.create_task(session.push())
                try:
                    await session.read()
                except ConnectionClosed:
                    pass
                finally:
                    pusher.cancel()
        finally:
            counters.sessions -= 1


async def serve_until_signalled(baseline: Baseline, host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with serve(baseline.handle, host, port, process_request=baseline.http, compression=None,
                     backlog=LISTEN_BACKLOG, max_size=1_048_576, ping_interval=20.0, ping_timeout=20.0,
                     logger=logging.getLogger("bench.websockets")) as server:
        sock_host, sock_port = server.sockets[0].getsockname()[:2]
        tune_gc()  # as tetherd does after start-up
        log.info("event=listening url=ws://%s:%d per_session=%d window=%d", sock_host, sock_port,
                 baseline.per_session, baseline.window)
        await stop.wait()
        server.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ws_baseline", description=__doc__.split("\n\n")[0])
    p.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (default 127.0.0.1:0)")
    p.add_argument("--per-session", type=int, default=0, help="task frames pushed to each session")
    p.add_argument("--arg-bytes", type=int, default=0, help="approximate size of each task's args")
    p.add_argument("--window", type=int, default=10, help="unacknowledged tasks per session (tetherd's default 10)")
    args = p.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="level=%(levelname)s %(message)s")
    baseline = Baseline(args.per_session, args.arg_bytes, args.window)
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve_until_signalled(baseline, host, int(port)))
    else:
        uvloop.run(serve_until_signalled(baseline, host, int(port)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
