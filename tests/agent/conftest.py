"""A fake ``tetherd`` that speaks the real frames, and fixtures to run agents against it.

The fake does what the daemon will do at the protocol level and nothing more: it answers
``enroll`` and ``hello``, then hands each session to the test, which pushes frames and
reads what the agent sent. Tests synchronise on those frames (queues), never on sleeps.
Like an older tetherd it speaks no optional feature unless told (``FakeDaemon.features``);
with ``batch`` it can push batches (:meth:`FakeSession.send_batch`) and unpacks the
agent's, keeping each message's frame count and size in :attr:`FakeSession.messages`.
For polling commands the test plays the daemon's part too: after a ``result`` with a
``schedule`` it pushes the next run (:meth:`FakeDaemon.next_run`) -- no wait, the wheel's
delay is the daemon's business.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from tether.agent import Agent, AgentClient, ClientSettings, Identity, Journal
from tether.protocol import (
    MSGPACK,
    PROTOCOL_VERSION,
    Enroll,
    Enrolled,
    Error,
    ErrorCode,
    Frame,
    Hello,
    Progress,
    ProtocolError,
    Result,
    Task,
    Welcome,
    decode_to_daemon,
)
from tether.protocol.codec import encode_batch, unbatch
from tether.protocol.errors import is_session_error
from tether.protocol.frames import MAX_IDS, Batch

TIMEOUT = 5.0
"""Upper bound for any single wait in these tests; a hang fails instead of blocking CI."""

F = TypeVar("F", bound=Frame)


class FakeSession:
    """One agent session as the daemon sees it."""

    def __init__(self, ws: ServerConnection, hello: Hello) -> None:
        self.ws = ws
        self.hello = hello
        self.frames: asyncio.Queue[Frame] = asyncio.Queue()
        self.messages: list[tuple[int, int]] = []
        """Per message received after the hello: how many frames it held (1 unless a batch)
        and its size in bytes."""
        self.closed = asyncio.Event()
        self.close_code: int | None = None

    async def send(self, *frames: Frame) -> None:
        for frame in frames:
            await self.ws.send(MSGPACK.encode(frame))

    async def send_batch(self, *frames: Frame | bytes) -> None:
        """One ``batch`` message; ``bytes`` go in as they are (e.g. a frame that is not one)."""
        await self.ws.send(encode_batch(MSGPACK, [f if isinstance(f, bytes) else MSGPACK.encode(f) for f in frames]))

    def received(self, data: bytes | str) -> None:
        frame = decode_to_daemon(data)
        if not isinstance(frame, Batch):
            self.messages.append((1, len(data)))
            self.frames.put_nowait(frame)
            return
        inner = unbatch(frame, isinstance(data, bytes), to_daemon=True)
        self.messages.append((len(inner), len(data)))
        for item in inner:
            assert not isinstance(item, ProtocolError), item
            self.frames.put_nowait(item)

    async def close(self, code: int = 1011, reason: str = "") -> None:
        await self.ws.close(code, reason)

    async def next(self) -> Frame:
        async with asyncio.timeout(TIMEOUT):
            return await self.frames.get()

    async def expect(self, kind: type[F], *, skip: tuple[type[Frame], ...] = (Progress,)) -> F:
        """The next frame that is not of a ``skip`` type; it must be a ``kind``."""
        while True:
            frame = await self.next()
            if isinstance(frame, skip) and not isinstance(frame, kind):
                continue
            assert isinstance(frame, kind), f"expected {kind.__name__}, got {frame!r}"
            return frame

    async def wait_closed(self) -> int | None:
        async with asyncio.timeout(TIMEOUT):
            await self.closed.wait()
        return self.close_code


@dataclass
class FakeDaemon:
    url: str = ""
    token: str = "s3cret-token"
    sessions: asyncio.Queue[FakeSession] = field(default_factory=asyncio.Queue)
    hellos: list[Hello] = field(default_factory=list)
    hello_times: list[float] = field(default_factory=list)
    enrolls: list[Enroll] = field(default_factory=list)
    refusals: deque[Error] = field(default_factory=deque)
    """Errors to answer the next hellos with (then close with the error's code)."""
    bad_welcomes: list[bytes] = field(default_factory=list)
    """Answer the next hellos with these bytes instead of a welcome (then close 1011)."""
    http_refusals: int = 0
    """Answer this many upgrade requests with HTTP 503 (a load balancer shedding load)."""
    features: tuple[str, ...] = ()
    """Optional features this daemon speaks; the welcome names those the hello announced too."""
    welcome_agent_id: str | None = None
    """The agent id the welcome names, if not the hello's (the agent was merged into it)."""
    window: int = MAX_IDS
    """The window the welcome names (the agent refuses pushes past it)."""
    enroll_answer: Enrolled | Error = field(
        default_factory=lambda: Enrolled(agent_id="agent-1", token="s3cret-token", tags=["lab"])
    )

    def refuse_next(self, code: ErrorCode, message: str = "no", retry_after: float | None = None) -> None:
        self.refusals.append(Error(code=int(code), name=code.slug, message=message, retry_after=retry_after))

    async def next_session(self) -> FakeSession:
        async with asyncio.timeout(TIMEOUT):
            return await self.sessions.get()

    @staticmethod
    def task(delivery_id: int, command: str = "echo", args: Any = None, priority: int = 1, run: int = 1) -> Task:
        """A ``task`` frame as the daemon pushes it (args default: ``{"n": delivery_id}``)."""
        payload = {"n": delivery_id} if args is None else args
        return Task(
            delivery_id=delivery_id, task_id=1000 + delivery_id, command=command,
            args=msgspec.Raw(MSGPACK.encode_value(payload)), priority=priority, run=run,
        )

    @staticmethod
    def next_run(previous: Task, result: Result) -> Task:
        """The ``task`` the daemon pushes when ``result`` (of ``previous``) asked for a next
        run: the same delivery, the schedule's command and args, the next run number."""
        assert result.schedule is not None, result
        assert (result.delivery_id, result.run) == (previous.delivery_id, previous.run)
        return Task(
            delivery_id=previous.delivery_id, task_id=previous.task_id, command=result.schedule.command,
            args=msgspec.Raw(MSGPACK.encode_value(result.schedule.args)), priority=previous.priority,
            run=previous.run + 1,
        )

    def process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        if self.http_refusals > 0:
            self.http_refusals -= 1
            return ws.respond(503, "busy\n")
        return None

    async def handler(self, ws: ServerConnection) -> None:
        first = decode_to_daemon(await ws.recv())
        if isinstance(first, Enroll):
            self.enrolls.append(first)
            await ws.send(MSGPACK.encode(self.enroll_answer))
            code = self.enroll_answer.code if isinstance(self.enroll_answer, Error) else 1000
            await ws.close(code)
            return
        assert isinstance(first, Hello), first
        self.hellos.append(first)
        self.hello_times.append(asyncio.get_running_loop().time())
        refusal = self.refusals.popleft() if self.refusals else None
        if refusal is None and first.token != self.token:
            refusal = Error(code=ErrorCode.UNAUTHORIZED, name="unauthorized", message="bad token")
        if refusal is None and self.bad_welcomes:
            await ws.send(self.bad_welcomes.pop(0))
            await ws.close(1011)
            return
        if refusal is not None:
            await ws.send(MSGPACK.encode(refusal))
            await ws.close(refusal.code if is_session_error(refusal.code) else 4001, refusal.name)
            return
        await ws.send(MSGPACK.encode(Welcome(
            version=PROTOCOL_VERSION, role="agent", session_id=f"s{len(self.hellos)}",
            server_time=0.0, agent_id=self.welcome_agent_id or first.agent_id, window=self.window,
            features=[f for f in first.features if f in self.features],
        )))
        session = FakeSession(ws, first)
        self.sessions.put_nowait(session)
        try:
            async for data in ws:
                session.received(data)
        except ConnectionClosed:
            pass
        finally:
            session.close_code = ws.close_code
            session.closed.set()


@pytest.fixture
async def daemon() -> AsyncIterator[FakeDaemon]:
    fake = FakeDaemon()
    async with serve(fake.handler, "127.0.0.1", 0, compression=None, process_request=fake.process_request) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        fake.url = f"ws://127.0.0.1:{port}"
        yield fake


@dataclass
class RunningAgent:
    client: AgentClient
    journal: Journal
    task: asyncio.Task[None]

    async def stopped(self) -> None:
        """Stop and wait for ``run()`` to return (re-raising what it raised)."""
        self.client.stop()
        async with asyncio.timeout(TIMEOUT):
            await self.task


StartAgent = Callable[..., Awaitable[RunningAgent]]


@pytest.fixture
async def start_agent(daemon: FakeDaemon, tmp_path: Path) -> AsyncIterator[StartAgent]:
    """Start an ``AgentClient`` enrolled with the fake daemon; stopped at teardown."""
    running: list[RunningAgent] = []

    async def start(agent: Agent | None = None, *, name: str = "agent-1", token: str | None = None,
                    **options: Any) -> RunningAgent:
        journal = Journal(tmp_path / f"{name}.sqlite")
        if journal.identity() is None:
            journal.set_identity(Identity(
                server=daemon.url, agent_id=name, token=token or daemon.token, machine_uuid=f"machine-{name}",
            ))
        options.setdefault("backoff_base", 0.01)
        options.setdefault("backoff_cap", 0.05)
        options.setdefault("shutdown_grace", 2.0)
        log, rand = options.pop("log", None), options.pop("rand", random.random)
        client = AgentClient(journal, agent, ClientSettings(**options), log=log, rand=rand)
        handle = RunningAgent(client, journal, asyncio.create_task(client.run()))
        running.append(handle)
        return handle

    yield start
    for handle in running:
        handle.client.stop()
        async with asyncio.timeout(TIMEOUT):
            await asyncio.gather(handle.task, return_exceptions=True)
        handle.journal.close()
