"""Console sessions: an admin token's requests (``req`` frames), each answered once its
operation is committed (:mod:`.rpc`), several in flight at once.

The sessions are kept by the admin token they logged in with, so revoking the token ends
them (:meth:`ConsoleSessions.close`, the operations' :class:`~.operations.Consoles`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from ..protocol.codec import Codec, error_frame
from ..protocol.errors import ErrorCode, ProtocolError
from ..protocol.frames import Event, Frame, Hello, Request, Response
from ..protocol.session import Inbox, welcome
from .config import Config
from .limits import CredentialThrottle
from .operations import ACTOR, STORAGE_RETRY_AFTER, Operations
from .peer import INLINE_CHECK_BYTES, Pacing, SessionEnd, refuse, remote_host
from .rpc import ConsoleRPC
from .session import send_frame

log = logging.getLogger("tether.server")


class ConsoleSessions:
    def __init__(self, config: Config, operations: Operations, pacing: Pacing, throttle: CredentialThrottle) -> None:
        self.config = config
        self.operations = operations
        self.pacing = pacing
        self.throttle = throttle
        self.rpc = ConsoleRPC(operations, min_interval=config.min_interval)
        self.by_token: dict[int, set[tuple[ServerConnection, Codec]]] = {}
        """Open console sessions by the id of the admin token they logged in with."""
        self.open = 0
        self._closing: set[asyncio.Task[None]] = set()
        operations.consoles = self

    def close(self, token_id: int, reason: str) -> int:
        """End the sessions logged in with the token, with 4010, each from a task of its
        own: the request that revoked the token has its answer written first (even in the
        session being closed). How many."""
        sessions = self.by_token.pop(token_id, set())
        for ws, codec in sessions:
            task = asyncio.get_running_loop().create_task(
                refuse(ws, codec, ProtocolError(ErrorCode.UNAUTHORIZED, reason)))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        return len(sessions)

    async def serve(self, ws: ServerConnection, codec: Codec, hello: Hello) -> None:
        """A console session, from its login until it ends."""
        operations, stats, pacing = self.operations, self.operations.stats, self.pacing
        login = await operations.store.admin_login(hello.token) if hello.token else None
        if login is None:
            raise SessionEnd(ProtocolError(ErrorCode.UNAUTHORIZED, "admin token not recognised"))
        token_id, role = login
        ACTOR.set(f"admin token {token_id} ({role})")  # this session's requests run in a copy of this context
        self.throttle.succeeded(remote_host(ws))
        mine = (ws, codec)
        self.by_token.setdefault(token_id, set()).add(mine)
        await send_frame(ws, codec, welcome(hello, session_id=secrets.token_hex(8),
                                            server_time=operations.clock.time()))
        stats.sessions_total["console"] += 1
        self.open += 1
        send_lock = asyncio.Lock()

        async def send(frame: Frame) -> None:
            async with send_lock:
                await send_frame(ws, codec, frame)
                stats.frames_out += 1

        requests: set[asyncio.Task[None]] = set()
        budget = pacing.budget()
        inbox = Inbox("console", codec)
        slots = asyncio.Semaphore(self.config.max_requests_in_flight)

        def done(task: asyncio.Task[None]) -> None:
            requests.discard(task)
            slots.release()

        try:
            async with asyncio.TaskGroup() as tg:
                try:
                    async for message in ws:
                        stats.frames_in += 1
                        inbox.receive(message)
                        frames = inbox.frames()
                        if inbox.error is not None:
                            await send(inbox.error)
                            await pacing.pace(ws, budget, inbox.charge, 1, send)
                            continue
                        [frame] = frames
                        assert isinstance(frame, Request)
                        await pacing.pace(ws, budget, inbox.charge, 0, send)
                        await slots.acquire()  # at most max_requests_in_flight unanswered
                        task = tg.create_task(self._answer(
                            frame, send, role, large=len(message) > INLINE_CHECK_BYTES))
                        requests.add(task)
                        task.add_done_callback(done)
                except ConnectionClosed:
                    pass
                finally:
                    # The console left: nobody is waiting for these answers any more.
                    for task in requests:
                        task.cancel()
        finally:
            self.open -= 1
            same_token = self.by_token.get(token_id)
            if same_token is not None:
                same_token.discard(mine)
                if not same_token:
                    del self.by_token[token_id]

    async def _answer(self, req: Request, send: Callable[[Frame], Awaitable[None]], role: str, *,
                      large: bool = False) -> None:
        async def emit(topic: str, data: Any) -> None:
            await send(Event(id=req.id, topic=topic, data=data))

        try:
            result = await self.rpc.call(req.method, req.params, emit, role, large=large)
        except ProtocolError as exc:
            exc.ref = req.id
            reply: Frame = error_frame(
                exc, STORAGE_RETRY_AFTER if exc.code == ErrorCode.STORAGE_UNAVAILABLE else None)
        except Exception:
            log.exception("event=request_crashed method=%s", req.method)
            reply = error_frame(ProtocolError(ErrorCode.INTERNAL, "internal error; see tetherd log", ref=req.id))
        else:
            reply = Response(id=req.id, result=result)
        with contextlib.suppress(ConnectionClosed):
            await send(reply)
