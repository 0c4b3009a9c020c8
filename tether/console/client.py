"""The console side of the protocol: :class:`ConsoleClient` and the errors it raises.

Used by tetherctl, the benchmarks and the tests. Like tetherctl it needs only the standard
library, msgspec, websockets and :mod:`tether.protocol`. Each error carries the exit code
tetherctl turns it into.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from types import TracebackType
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

from tether.protocol import JSON, PROTOCOL_VERSION, ErrorCode, ProtocolError, decode_from_daemon
from tether.protocol.endpoints import connect_failure
from tether.protocol.frames import Error, Event, Frame, Hello, Request, Response, Welcome

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


class DaemonError(ConsoleError):
    """An ``error`` frame, or a close code, from the daemon."""

    def __init__(self, code: int, name: str, message: str) -> None:
        super().__init__(f"{name} ({code}): {message}")
        self.code = code
        self.name = name
        self.message = message


class RequestError(DaemonError):
    """The daemon refused the request (1xxx); the input was wrong."""

    exit_code = EXIT_INPUT


class SessionClosed(DaemonError):
    """The daemon refused the handshake or ended the session (4xxx or a WebSocket close)."""

    exit_code = EXIT_CONNECT


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


def _error_from_frame(frame: Error) -> DaemonError:
    kind = SessionClosed if frame.code >= 4000 else RequestError
    return kind(frame.code, frame.name, frame.message)


def _error_from_close(exc: ConnectionClosed, url: str) -> SessionClosed:
    if exc.rcvd is None:
        return SessionClosed(1006, "connection_lost", f"the connection to {url} was lost")
    code, reason = exc.rcvd.code, exc.rcvd.reason
    try:
        name = ErrorCode(code).slug
    except ValueError:
        name = "closed"
    return SessionClosed(code, name, reason or "the daemon closed the session")


# -- the client ----------------------------------------------------------------------------


class ConsoleClient:
    """One console session: ``async with ConsoleClient(url, token) as c: await c.call(...)``.

    Entering opens the WebSocket and completes the ``hello``/``welcome`` handshake within
    ``open_timeout`` seconds, or raises :class:`CannotConnect` / :class:`SessionClosed`.
    :meth:`call` returns the result or raises :class:`RequestError` (1xxx) or
    :class:`SessionClosed`. Calls may run concurrently on one session: one reader task,
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

    async def __aenter__(self) -> ConsoleClient:
        context = client_context(self.url, self.ca_file)
        try:
            # Results (task.list of a large fleet) may exceed websockets' 1 MiB default.
            self._ws = await connect(self.url, open_timeout=self.open_timeout, max_size=None, ssl=context)
        except (OSError, TimeoutError, WebSocketException) as exc:
            raise CannotConnect(self.url, _connect_failure(exc, self.url)) from None
        try:
            async with asyncio.timeout(self.open_timeout):
                await self._send(Hello(role="console", version=PROTOCOL_VERSION, token=self.token))
                frame = await self._recv()
        except TimeoutError:
            await self._ws.close()
            raise CannotConnect(self.url, f"no welcome within {self.open_timeout:g} s") from None
        except BaseException:
            await self._ws.close()
            raise
        if isinstance(frame, Welcome):
            self.welcome = frame
            self._reader = asyncio.get_running_loop().create_task(self._read_answers(), name="console-reader")
            return self
        await self._ws.close()
        if isinstance(frame, Error):
            raise SessionClosed(frame.code, frame.name, frame.message)
        raise SessionClosed(int(ErrorCode.BAD_HELLO), "unexpected_frame", f"expected welcome, got {type(frame).__name__}")

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
        try:
            while True:
                frame = await self._recv()
                if isinstance(frame, Error) and (frame.code >= 4000 or frame.ref not in self._pending):
                    self._end(_error_from_frame(frame))  # about the session, not one request
                    continue
                rid = frame.ref if isinstance(frame, Error) else getattr(frame, "id", None)
                if rid not in self._pending:
                    continue
                fut, on_event = self._pending[rid]
                if isinstance(frame, Event):
                    if on_event is not None:
                        on_event(frame)
                elif fut.done():
                    continue
                elif isinstance(frame, Response):
                    fut.set_result(frame.result)
                elif isinstance(frame, Error):
                    fut.set_exception(_error_from_frame(frame))
        except DaemonError as exc:
            self._end(exc)

    def _end(self, error: DaemonError) -> None:
        """Fail every waiting call (and later ones, if the session is over) with ``error``."""
        if isinstance(error, SessionClosed):
            self._ended = error
        for fut, _ in self._pending.values():
            if not fut.done():
                fut.set_exception(error)

    async def _send(self, frame: Frame) -> None:
        assert self._ws is not None
        try:
            await self._ws.send(JSON.encode(frame), text=True)
        except ConnectionClosed as exc:
            raise _error_from_close(exc, self.url) from None

    async def _recv(self) -> Frame:
        assert self._ws is not None
        while True:
            try:
                data = await self._ws.recv()
            except ConnectionClosed as exc:
                raise _error_from_close(exc, self.url) from None
            try:
                return decode_from_daemon(data)
            except ProtocolError as exc:
                if exc.code is ErrorCode.UNKNOWN_FRAME:
                    continue  # a newer daemon's frame type: never reuses a tag, safe to skip
                raise SessionClosed(int(exc.code), exc.code.slug, f"the daemon sent {exc.message}") from None
