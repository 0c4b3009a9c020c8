"""An agent's login (``agent_sessions.AgentSessions.serve``) against a revocation that commits while
the login reads the token (15.5): in-process, a real Daemon on a real store and a real
websocket client; the login's read is held until the revoke has been applied, so the race
the end-to-end test provokes at random happens here every time."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from store_data import task
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tether.daemon.clock import SystemClock
from tether.daemon.config import Config
from tether.daemon.operations import Operations
from tether.daemon.server import Daemon
from tether.daemon.store import AgentAuth, Enrollment, StoreError
from tether.daemon.store.sqlite import SQLiteStore
from tether.protocol import MSGPACK, PROTOCOL_VERSION, Ack, Hello, Task, Welcome
from tether.protocol.codec import decode_from_daemon, unbatch
from tether.protocol.frames import Batch, Error


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[tuple[Daemon, SQLiteStore, Enrollment]]:
    store = SQLiteStore(tmp_path / "t.sqlite")
    await store.open()
    now = time.time()
    _, key = (await store.bootstrap(now)).result  # type: ignore[misc]
    agent = (await store.enroll(key, "uuid-a", "a", "linux", [], now)).result
    d = Daemon(Config(listen="127.0.0.1:0"), Operations(store, SystemClock()))
    await d.start()
    yield d, store, agent
    await d.drain()
    await store.close()


async def _nothing(topic: str, data: Any) -> None:
    return None


@pytest.mark.parametrize("method", ["agent.revoke", "agent.rm"])
async def test_a_login_that_read_the_token_before_a_revocation_is_refused(
    daemon: tuple[Daemon, SQLiteStore, Enrollment], monkeypatch: pytest.MonkeyPatch, method: str,
) -> None:
    d, store, agent = daemon
    read, release = asyncio.Event(), asyncio.Event()
    real = store.authenticate_agent

    async def held(agent_id: str, token: str) -> AgentAuth | None:
        auth = await real(agent_id, token)  # the token read before the revocation commits
        if not read.is_set():
            read.set()
            await release.wait()  # ... and answered after it was applied
        return auth

    monkeypatch.setattr(store, "authenticate_agent", held)
    async with connect(d.url) as ws:
        await ws.send(MSGPACK.encode(Hello(role="agent", version=PROTOCOL_VERSION, agent_id=agent.agent_id,
                                           token=agent.token)))
        await read.wait()
        answer = await d.consoles.rpc.call(method, {"agent_id": agent.agent_id}, _nothing)
        assert answer.sessions_closed == 0  # the login had not registered its session yet
        release.set()
        frames = []
        try:
            async with asyncio.timeout(5):
                async for data in ws:
                    frames.append(decode_from_daemon(data))
        except ConnectionClosed:
            pass
        except TimeoutError:
            pytest.fail(f"the revoked agent's session stayed open; it was sent {frames}")
        assert ws.close_code == 4010
    assert not any(isinstance(f, Welcome) for f in frames)
    assert isinstance(frames[-1], Error) and frames[-1].code == 4010
    assert not d.operations.push.online(agent.agent_id)


QUEUED = 7


@pytest.fixture
async def queued_daemon(tmp_path: Path) -> AsyncIterator[tuple[Daemon, str, str]]:
    store = SQLiteStore(tmp_path / "t.sqlite")
    await store.open()
    now = time.time()
    _, key = (await store.bootstrap(now)).result  # type: ignore[misc]
    agent = (await store.enroll(key, "uuid-a", "a", "linux", [], now)).result
    for n in range(QUEUED):
        await store.create_task(task("agent", agent.agent_id, ttl=600, priority=n % 4), now)
    d = Daemon(Config(listen="127.0.0.1:0"), Operations(store, SystemClock()))
    d.agents.first_page = 3
    await d.start()
    yield d, agent.agent_id, agent.token
    await d.drain()
    await store.close()


async def session(d: Daemon, agent_id: str, token: str) -> tuple[list[Task], list[Any]]:
    """Open an agent session, acknowledge what comes, return the tasks and what else came."""
    tasks: list[Task] = []
    other: list[Any] = []
    async with connect(d.url) as ws:
        await ws.send(MSGPACK.encode(Hello(role="agent", version=PROTOCOL_VERSION, agent_id=agent_id, token=token)))
        assert isinstance(decode_from_daemon(await ws.recv()), Welcome)
        try:
            while len(tasks) < QUEUED:
                data = await asyncio.wait_for(ws.recv(), 5)
                frame = decode_from_daemon(data)
                frames = list(unbatch(frame, True, to_daemon=False)) if isinstance(frame, Batch) else [frame]
                new = [f for f in frames if isinstance(f, Task)]
                other += [f for f in frames if not isinstance(f, Task)]
                tasks += new
                if new:
                    with contextlib.suppress(ConnectionClosed):  # what came before the close is read still
                        await ws.send(MSGPACK.encode(Ack(delivery_ids=[t.delivery_id for t in new])))
        except Exception as exc:  # the session ended (closed, or nothing more came)
            other.append(exc)
    return tasks, other


async def test_the_whole_queue_comes_in_priority_order_across_the_page(queued_daemon: tuple[Daemon, str, str]) -> None:
    d, agent_id, token = queued_daemon
    tasks, other = await session(d, agent_id, token)
    assert len({t.delivery_id for t in tasks}) == QUEUED == len(tasks), other
    assert [t.priority for t in tasks] == sorted((t.priority for t in tasks), reverse=True)


async def test_a_failed_read_of_the_rest_ends_the_session_with_retry_later(
    queued_daemon: tuple[Daemon, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    d, agent_id, token = queued_daemon
    read = d.store.pending_for_agent

    async def failing(agent: str, *, limit: int | None = None, after: Any = None) -> Any:
        if after is not None:
            raise StoreError("database is locked")
        return await read(agent, limit=limit, after=after)

    monkeypatch.setattr(d.store, "pending_for_agent", failing)
    tasks, other = await session(d, agent_id, token)
    assert len(tasks) <= 3  # at most the first page went out before the session ended
    (error,) = [f for f in other if isinstance(f, Error)]
    assert error.name == "server_error" and error.retry_after == 5.0 and "storage unavailable" in error.message
