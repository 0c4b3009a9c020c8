"""The console side of the protocol: :class:`ConsoleClient`, and what it raises.

Used by tetherctl, the benchmarks and the tests. Like tetherctl it needs only the standard
library, msgspec, websockets and :mod:`tether.protocol`. The session's rules (the hello,
what the first answer means, what a close means) are :mod:`tether.protocol.session`'s; this
module moves messages and hands each answer to the call waiting for it.

What the daemon refuses is :mod:`tether.protocol.errors`' (the types the agent raises too):
:class:`~tether.protocol.errors.SessionClosed` (the hello refused, or the session ended) and
:class:`~tether.protocol.errors.RequestRefused` (one request refused; ``RequestError`` is its
older name). A failure on this side is a :class:`ConsoleError` (:class:`CannotConnect`: the
daemon could not be reached). :func:`exit_code` says which exit code tetherctl turns each into.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from types import TracebackType
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

from tether.protocol import JSON, ErrorCode, ProtocolError
from tether.protocol.endpoints import connect_failure
from tether.protocol.errors import DaemonError, RequestRefused, SessionClosed, is_session_error
from tether.protocol.frames import Error, Event, Frame, Request, Response, Welcome
from tether.protocol.session import ClientSession, console_hello

DEFAULT_URL = "ws://127.0.0.1:8765"
OPEN_TIMEOUT = 10.0
"""Seconds to open the WebSocket and get ``welcome`` for our ``hello``."""

EXIT_OK = 0
EXIT_TASK_FAILED = 1
EXIT_INPUT = 2
EXIT_CONNECT = 3
EXIT_TIMEOUT = 124
"""As timeout(1)."""


# -- errors --------------------------------------------------------------------------------


class ConsoleError(Exception):
    """A failure tetherctl reports as ``error: ...`` on stderr and turns into an exit code."""

    exit_code = EXIT_INPUT


class CannotConnect(ConsoleError):
    exit_code = EXIT_CONNECT

    def __init__(self, url: str, reason: object) -> None:
        super().__init__(f"cannot connect to {url}: {reason}")


RequestError = RequestRefused
"""The name :class:`~tether.protocol.errors.RequestRefused` had here before the console and
the agent shared one exception tree."""


def exit_code(exc: ConsoleError | DaemonError) -> int:
    """The exit code tetherctl turns a failure into: the session refused or ended is a
    connection failure (3), a refused request was wrong input (2)."""
    if isinstance(exc, ConsoleError):
        return exc.exit_code
    return EXIT_CONNECT if isinstance(exc, SessionClosed) else EXIT_INPUT


def client_context(url: str, ca_file: str | None) -> ssl.SSLContext | None:
    """The ``ssl`` argument for ``url``: ``None`` for ws://; for wss://, a context that
    verifies the daemon's certificate against ``ca_file`` (a private CA) or, without one,
    the system's store. TLS 1.2 at least. A file that cannot be used is a :class:`ConsoleError`."""
    if not url.startswith("wss://"):
        if ca_file:
            raise ConsoleError(f"--ca (or TETHER_CA) is for wss:// URLs; {url} is not one")
        return None
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file or None)
    except OSError as exc:  # ssl.SSLError too
        reason = exc.reason if isinstance(exc, ssl.SSLError) else exc.strerror
        raise ConsoleError(f"cannot use CA file {ca_file} (--ca or TETHER_CA): {reason or exc}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _connect_failure(exc: BaseException, url: str) -> str:
    """Why connecting failed, in words; where TLS may be why, what to do about it."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (f"the daemon's certificate was not accepted ({exc.verify_message}); "
                "if a private CA signed it, pass --ca FILE or set TETHER_CA")
    return connect_failure(exc, url)


def _refusal(frame: Error) -> DaemonError:
    """An ``error`` frame as what a call raises: a session error ends the session."""
    kind = SessionClosed if is_session_error(frame.code) else RequestRefused
    return kind(frame.code, frame.name, frame.message, retry_after=frame.retry_after)


def _closed(session: ClientSession, exc: ConnectionClosed) -> SessionClosed:
    """What the end of the connection meant (the close frame received, if any)."""
    if exc.rcvd is None:
        return session.closed(None)
    return session.closed(exc.rcvd.code, exc.rcvd.reason)


# -- the client ----------------------------------------------------------------------------


class ConsoleClient:
    """One console session: ``async with ConsoleClient(url, token) as c: await c.call(...)``.

    Entering opens the WebSocket and completes the ``hello``/``welcome`` handshake within
    ``open_timeout`` seconds, or raises :class:`CannotConnect` /
    :class:`~tether.protocol.errors.SessionClosed`. :meth:`call` returns the result or
    raises :class:`~tether.protocol.errors.RequestRefused` (1xxx) or
    :class:`~tether.protocol.errors.SessionClosed`. Calls may run concurrently on one session: one reader task,
    owned by the client and ended by :meth:`close`, hands each answer to its caller by id.
    """

    def __init__(self, url: str, token: str, *, open_timeout: float = OPEN_TIMEOUT,
                 ca_file: str | None = None) -> None:
        self.url = url
        self.token = token
        self.open_timeout = open_timeout
        self.ca_file = ca_file
        """PEM CA certificates to trust for a wss:// daemon instead of the system's store."""
        self.welcome: Welcome | None = None
        self._ws: ClientConnection | None = None
        self._last_id = 0
        self._pending: dict[int, tuple[asyncio.Future[Any], Callable[[Event], None] | None]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._ended: DaemonError | None = None
        self._session: ClientSession | None = None

    async def __aenter__(self) -> ConsoleClient:
        context = client_context(self.url, self.ca_file)
        try:
            # Results (task.list of a large fleet) may exceed websockets' 1 MiB default.
            self._ws = await connect(self.url, open_timeout=self.open_timeout, max_size=None, ssl=context)
        except (OSError, TimeoutError, WebSocketException) as exc:
            raise CannotConnect(self.url, _connect_failure(exc, self.url)) from None
        session = self._session = ClientSession(console_hello(self.token), JSON)
        try:
            async with asyncio.timeout(self.open_timeout):
                await self._send_message(session.opening())
                try:
                    data = await self._ws.recv()
                except ConnectionClosed as exc:
                    raise _closed(session, exc) from None
                [welcome] = session.receive(data)  # a refusal, or no answer: SessionClosed
        except TimeoutError:
            await self._ws.close()
            raise CannotConnect(self.url, f"no welcome within {self.open_timeout:g} s") from None
        except BaseException:
            await self._ws.close()
            raise
        assert isinstance(welcome, Welcome)
        self.welcome = welcome
        self._reader = asyncio.get_running_loop().create_task(self._read_answers(), name="console-reader")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            await self._reader  # ends once the connection is closed
            self._reader = None

    async def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        on_event: Callable[[Event], None] | None = None,
    ) -> Any:
        """Send ``req(method, params)`` and return the ``res`` result.

        ``event`` frames for this request (``task.wait`` progress) go to ``on_event``.
        """
        if self._ended is not None:
            raise self._ended
        self._last_id += 1
        rid = self._last_id
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[rid] = (fut, on_event)
        try:
            await self._send(Request(id=rid, method=method, params=params or {}))
            return await fut
        finally:
            self._pending.pop(rid, None)

    async def _read_answers(self) -> None:
        """Hand every answer to the call waiting for it, until the session ends."""
        assert self._ws is not None and self._session is not None
        ws, session = self._ws, self._session
        try:
            while True:
                try:
                    data = await ws.recv()
                except ConnectionClosed as exc:
                    self._end(_closed(session, exc))
                    return
                for frame in session.receive(data):
                    self._answer(frame)
        except SessionClosed as exc:
            self._end(exc)

    def _answer(self, frame: Frame | ProtocolError) -> None:
        if isinstance(frame, ProtocolError):
            if frame.code is ErrorCode.UNKNOWN_FRAME:
                return  # a newer daemon's frame type: never reuses a tag, safe to skip
            raise SessionClosed(int(frame.code), frame.code.slug, f"the daemon sent {frame.message}")
        if isinstance(frame, Error) and (is_session_error(frame.code) or frame.ref not in self._pending):
            self._end(_refusal(frame))  # about the session, not one request
            return
        rid = frame.ref if isinstance(frame, Error) else getattr(frame, "id", None)
        if rid not in self._pending:
            return
        fut, on_event = self._pending[rid]
        if isinstance(frame, Event):
            if on_event is not None:
                on_event(frame)
        elif fut.done():
            return
        elif isinstance(frame, Response):
            fut.set_result(frame.result)
        elif isinstance(frame, Error):
            fut.set_exception(_refusal(frame))

    def _end(self, error: DaemonError) -> None:
        """Fail every waiting call (and later ones, if the session is over) with ``error``."""
        if isinstance(error, SessionClosed):
            self._ended = error
        for fut, _ in self._pending.values():
            if not fut.done():
                fut.set_exception(error)

    async def _send(self, frame: Frame) -> None:
        await self._send_message(JSON.encode(frame))

    async def _send_message(self, message: bytes) -> None:
        assert self._ws is not None and self._session is not None
        try:
            await self._ws.send(message, text=True)
        except ConnectionClosed as exc:
            raise _closed(self._session, exc) from None
