"""An agent's login (``agent_sessions.AgentSessions.serve``) against a revocation that commits while
the login reads the token (15.5): in-process, a real Daemon on a real store and a real
websocket client; the login's read is held until the revoke has been applied, so the race
the end-to-end test provokes at random happens here every time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tether.daemon.clock import SystemClock
from tether.daemon.config import Config
from tether.daemon.operations import Operations
from tether.daemon.server import Daemon
from tether.daemon.store import AgentAuth, Enrollment
from tether.daemon.store.sqlite import SQLiteStore
from tether.protocol import MSGPACK, PROTOCOL_VERSION, Hello
from tether.protocol.codec import decode_from_daemon
from tether.protocol.frames import Error, Welcome


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
