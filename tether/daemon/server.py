"""tetherd's network side: one port for WebSocket sessions and the HTTP endpoints.

The daemon listens, counts connections from TCP accept (and sheds what is over its
limits), answers plain HTTP (``/healthz``, ``/metrics``), and reads each connection's first
frame, which decides the session: ``enroll`` or an agent's ``hello``
(:mod:`.agent_sessions`), or a console's ``hello`` (:mod:`.console_sessions`). Each
connection is handled by one coroutine that owns everything it starts. Errors at the edge
are answered with a registry code and never a traceback; one peer's bad input never
affects another.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import logging
import math
import ssl
from http import HTTPStatus
from typing import cast

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request as HTTPRequest
from websockets.http11 import Response as HTTPResponse
from websockets.typing import Origin

from .. import __version__
from ..protocol.codec import MSGPACK, Codec
from ..protocol.errors import ErrorCode, ProtocolError
from ..protocol.frames import Enroll
from ..protocol.session import handshake_timeout, open_session, peer_codec
from .agent_sessions import AgentSessions
from .config import Config, exempt_networks
from .console_sessions import ConsoleSessions
from .limits import Admission, ConnectionLimits, CredentialThrottle, ShedLog, connection_cap
from .metrics import render_metrics
from .operations import Operations
from .peer import Pacing, SessionEnd, refuse, remote_host, store_failed
from .store import StoreError, StoreStats
from .tls import (
    server_context,
)

log = logging.getLogger("tether.server")

LISTEN_BACKLOG = 4096
"""Capped by the kernel's net.core.somaxconn."""

SHED_RETRY_AFTER = 10.0
"""Seconds a connection refused for its address's limit (4029) is told to wait."""

SHED_GRACE = 2.0
"""Seconds a connection over its address's limit has to upgrade and be told 4029 before
it is cut."""


class CountedConnection(ServerConnection):
    """A WebSocket connection that the daemon counts from TCP accept to close: websockets
    calls ``connection_made`` when the connection is accepted (under TLS, when its TLS
    handshake is done), before any of the HTTP upgrade is read. Each :class:`Daemon`
    makes a subclass naming it (``daemon``)."""

    daemon: Daemon
    admission = Admission.ADMIT
    limit_key: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.daemon.accepted(self, cast(asyncio.Transport, transport))

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.daemon.lost(self)


CREDENTIAL_FAILURES = frozenset({ErrorCode.UNAUTHORIZED, ErrorCode.ENROLL_KEY_UNKNOWN, ErrorCode.ENROLL_KEY_EXPIRED,
                                 ErrorCode.ENROLL_KEY_EXHAUSTED})
"""Refusals that count as a failed login or enrollment of the peer's address."""


class Daemon:
    """The running service: operations, store and WebSocket server."""

    def __init__(self, config: Config, operations: Operations, *, open_files: int = 0) -> None:
        """``open_files``: tetherd's fd limit, which the limit on connections is derived
        from when ``max_connections`` is 0 (0 here too: no limit on all connections)."""
        self.config = config
        self.operations = operations
        self.stats = operations.stats
        self.store = operations.store
        self.clock = operations.clock
        self.server: Server | None = None
        self.draining = False
        total = config.max_connections or (connection_cap(open_files) if open_files else 0)
        self.limits = ConnectionLimits(config.max_sessions_per_address, exempt_networks(config), total)
        self.shed_log = ShedLog()
        self.throttle = CredentialThrottle([ipaddress.ip_network(n, strict=False) for n in config.login_throttle_exempt])
        self.pacing = Pacing(config, self.clock, self.stats)
        self.agents = AgentSessions(config, operations, self.pacing, self.throttle)
        self.consoles = ConsoleSessions(config, operations, self.pacing, self.throttle)

    # -- HTTP on the same port ------------------------------------------------------------

    def _http(self, connection: ServerConnection, request: HTTPRequest) -> HTTPResponse | None:
        """Plain HTTP on the WebSocket port: ``GET /healthz``, ``GET /metrics`` (behind
        ``metrics_token`` when it is set) and the upgrade on ``/``; anything else is refused
        (404 for another path, 405 for another method). A browser's upgrade is checked
        against ``allowed_origins`` by websockets (``serve(origins=...)``: 403)."""
        path = request.path.split("?", 1)[0]
        if path not in ("/", "/healthz", "/metrics"):
            return connection.respond(HTTPStatus.NOT_FOUND, "not found: tetherd serves /, /healthz, /metrics\n")
        if request.method != "GET":
            response = connection.respond(HTTPStatus.METHOD_NOT_ALLOWED, f"{path} takes GET only\n")
            response.headers["Allow"] = "GET"
            return response
        if path != "/" and getattr(connection, "admission", Admission.ADMIT) is Admission.REFUSE:
            # Over its address's limit (an upgrade is told 4029 once it is upgraded).
            response = connection.respond(HTTPStatus.TOO_MANY_REQUESTS,
                                          f"too many connections from {remote_host(connection)}; retry later\n")
            response.headers["Retry-After"] = str(int(SHED_RETRY_AFTER))
            return response
        if path == "/healthz":
            status = HTTPStatus.SERVICE_UNAVAILABLE if self.draining else HTTPStatus.OK
            return connection.respond(status, "draining\n" if self.draining else "ok\n")
        if path == "/metrics":
            if not metrics_allowed(self.config.metrics_token, request.headers.get("Authorization", "")):
                response = connection.respond(HTTPStatus.UNAUTHORIZED,
                                              "/metrics needs the metrics_token: Authorization: Bearer TOKEN\n")
                response.headers["WWW-Authenticate"] = 'Bearer realm="tetherd metrics"'
                return response
            response = connection.respond(HTTPStatus.OK, render_metrics(self))
            del response.headers["Content-Type"]  # respond() set text/plain: one Content-Type, Prometheus's
            response.headers["Content-Type"] = "text/plain; version=0.0.4; charset=utf-8"
            return response
        if "websocket" not in request.headers.get("Upgrade", "").lower():
            return connection.respond(
                HTTPStatus.UPGRADE_REQUIRED, f"tetherd {__version__}: connect with a WebSocket client\n"
            )
        return None

    # -- what /metrics reads (metrics.Readings) --------------------------------------------

    def store_stats(self) -> StoreStats:
        return self.store.stats()

    def agents_online(self) -> int:
        return len(self.operations.push)

    def consoles_open(self) -> int:
        return self.consoles.open

    def timers_pending(self) -> int:
        return len(self.operations.timers)

    def connections_open(self) -> int | None:
        return self.limits.total

    def hook_outbox(self) -> tuple[int, int]:
        hooks = self.operations.hooks
        return (hooks.pending, hooks.dropped) if hooks is not None else (0, 0)

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self, tls: ssl.SSLContext | None = None) -> None:
        """Listen. ``tls``: the context :func:`.tls.server_context` made of the config, when
        the caller made it already (``tetherd serve`` does, before it opens the data
        directory, so a bad file fails first); else it is made here. None of it: ws://."""
        c = self.config
        self.tls = tls if tls is not None else server_context(c)
        self.server = await serve(
            self._handle, c.host, c.port,
            ssl=self.tls,
            create_connection=type("Connection", (CountedConnection,), {"daemon": self}),
            process_request=self._http,
            # No Origin header (agents, tetherctl): accepted; a browser's: only a listed one.
            origins=[None, *(Origin(o) for o in c.allowed_origins)],
            max_size=c.max_frame_bytes,
            open_timeout=c.handshake_timeout,
            ping_interval=c.ping_interval,
            ping_timeout=c.ping_timeout,
            compression=None,
            # A reconnect storm opens thousands of connections at once; asyncio's default
            # backlog of 100 makes the rest wait for SYN retransmits (1 s, 3 s, 7 s ...).
            backlog=LISTEN_BACKLOG,
            server_header=f"tetherd/{__version__}",
            logger=logging.getLogger("tether.websockets"),
        )

    @property
    def url(self) -> str:
        assert self.server is not None
        sock = self.server.sockets[0]
        host, port = sock.getsockname()[:2]
        host = f"[{host}]" if ":" in host else host
        return f"{'wss' if self.tls is not None else 'ws'}://{host}:{port}"

    async def drain(self) -> None:
        """SIGTERM: stop accepting, flush the writer, close sessions with 1001."""
        if self.server is None:
            return
        self.draining = True
        self.server.close(close_connections=False)
        with contextlib.suppress(StoreError):
            await self.store.flush()
        for connection in list(self.pacing.paused):  # it could not read a closing handshake
            connection.transport.abort()
        for connection in list(self.server.connections):
            with contextlib.suppress(Exception):
                await connection.close(1001, "tetherd is shutting down")
        await self.server.wait_closed()

    # -- connections, counted from TCP accept (CountedConnection) --------------------------

    def accepted(self, connection: CountedConnection, transport: asyncio.Transport) -> None:
        """A connection was just accepted (under TLS: its TLS handshake is done): count it,
        or shed it."""
        peer = transport.get_extra_info("peername")
        host = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        verdict, connection.limit_key, reason = self.limits.admit(host)
        connection.admission = verdict
        if verdict is Admission.ADMIT:
            return
        self.stats.shed[reason] += 1
        if count := self.shed_log.note(reason, self.clock.monotonic()):
            log.warning("event=connections_shed reason=%s count=%d remote=%s limit=%d", reason, count, host,
                        self.limits.limit if reason == "address" else self.limits.total_limit)
        if verdict is Admission.DROP:
            transport.abort()
        else:  # told 4029 once it has upgraded, or cut if it does not upgrade soon
            self.clock.call_at(self.clock.time() + SHED_GRACE, transport.abort)

    def lost(self, connection: CountedConnection) -> None:
        if connection.admission is not Admission.DROP:
            self.limits.release(connection.limit_key)

    # -- the first frame decides the session ---------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        try:
            if getattr(ws, "admission", Admission.ADMIT) is Admission.REFUSE:
                # Refused before its first frame, so its codec is unknown: MessagePack, the
                # agents' codec; the close code (4029) says it to any client.
                await refuse(ws, MSGPACK, ProtocolError(
                    ErrorCode.TOO_MANY_SESSIONS,
                    f"too many connections from {remote_host(ws)} (limit {self.limits.limit}); retry later",
                ), retry_after=SHED_RETRY_AFTER)
                return
            await self._serve_connection(ws)
        finally:
            self.stats.closed += 1  # a shed one too: every closed connection leaves a cycle

    async def _serve_connection(self, ws: ServerConnection) -> None:
        codec: Codec = MSGPACK
        kind: str | None = None  # what the first frame presented: enroll_key, agent_token or console_token
        try:
            try:
                async with asyncio.timeout(self.config.handshake_timeout):
                    first = await ws.recv()
            except TimeoutError:
                raise SessionEnd(handshake_timeout(self.config.handshake_timeout)) from None
            codec = peer_codec(first)
            self.stats.frames_in += 1
            try:
                opening = open_session(first)
            except ProtocolError as exc:
                raise SessionEnd(exc) from None
            kind = opening.credential
            if (wait := self.throttle.wait(remote_host(ws), self.clock.monotonic())) > 0:
                self.stats.logins_throttled += 1
                raise SessionEnd(ProtocolError(ErrorCode.LOGIN_THROTTLED, (
                    f"too many failed logins and enrollments from {remote_host(ws)}; this one was not looked at: "
                    f"retry in {math.ceil(wait)} s")), retry_after=math.ceil(wait * 1000) / 1000)
            frame = opening.frame
            if isinstance(frame, Enroll):
                await self.agents.enroll(ws, codec, frame)
            elif frame.role == "agent":
                await self.agents.serve(ws, codec, frame)
            else:
                await self.consoles.serve(ws, codec, frame)
        except SessionEnd as end:
            retry_after = end.retry_after
            if kind is not None and end.error.code in CREDENTIAL_FAILURES:
                retry_after = self._credentials_failed(ws, kind, end.error) or None
            quiet = end.error.code in CREDENTIAL_FAILURES or end.error.code == ErrorCode.LOGIN_THROTTLED
            await refuse(ws, codec, end.error, retry_after, quiet=quiet)
        except ConnectionClosed:
            pass
        except StoreError as exc:
            await store_failed(ws, codec, exc)
        except Exception:
            log.exception("event=session_crashed")
            await refuse(ws, codec, ProtocolError(ErrorCode.SERVER_ERROR, "internal error; see tetherd log"))

    def _credentials_failed(self, ws: ServerConnection, kind: str, error: ProtocolError) -> float:
        """Count a failed login or enrollment against the peer's address; the seconds its
        next one will wait (:class:`.limits.CredentialThrottle`). Logged at WARNING at most
        once a minute per address, with the failures since the last line."""
        host = remote_host(ws)
        self.stats.credential_failures[kind] += 1
        wait, to_log = self.throttle.failed(host, self.clock.monotonic())
        if to_log:
            log.warning("event=credentials_refused remote=%s kind=%s failures=%d code=%d retry_after=%g", host, kind,
                        to_log, error.code, math.ceil(wait))
        return math.ceil(wait * 1000) / 1000


def metrics_allowed(token: str, authorization: str) -> bool:
    """``/metrics`` may be read: no ``metrics_token`` is set, or the request's
    ``Authorization`` is ``Bearer`` that token (compared in constant time)."""
    if not token:
        return True
    scheme, _, given = authorization.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())
