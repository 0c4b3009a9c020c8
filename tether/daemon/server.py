"""tetherd's network side: WebSocket sessions and the HTTP endpoints on one port.

Each connection is handled by one coroutine that owns everything it starts. The first
frame decides the session: ``enroll`` (enroll and close), ``hello`` with role ``agent``
(the persistent session) or role ``console`` (admin RPC). Errors at the edge are answered
with a registry code and never a traceback; one peer's bad input never affects another.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import logging
import math
import secrets
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from http import HTTPStatus
from typing import Any, cast

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request as HTTPRequest
from websockets.http11 import Response as HTTPResponse
from websockets.typing import Origin

from .. import __version__
from ..protocol.codec import JSON, MSGPACK, Codec, decode_first, decode_to_daemon, error_frame, unbatch
from ..protocol.errors import ErrorCode, ProtocolError
from ..protocol.frames import (
    FEATURES,
    MAX_MESSAGE_WEIGHT,
    PROTOCOL_VERSION,
    Batch,
    Cancel,
    Enroll,
    Enrolled,
    Event,
    Frame,
    Hello,
    Request,
    Response,
    Welcome,
    message_weight,
    run_refs,
)
from ..protocol.lifecycle import cancel_reason
from ..protocol.tags import check_tags
from .config import Config, exempt_networks
from .effects import PushItem
from .limits import Admission, ConnectionLimits, CredentialThrottle, FrameBudget, ShedLog, connection_cap
from .metrics import render_metrics
from .operations import STORAGE_RETRY_AFTER, Operations
from .reports import Report, check_results, submit_reports
from .rpc import ConsoleRPC
from .session import FIRST_PAGE, AgentSession, send_frame
from .store import StoreError, StoreStats
from .tls import (
    CERTIFICATE_NOT_BOUND,
    CLIENT_CERTIFICATE_REQUIRED,
    client_certificate_refusal,
    client_certificate_sha256,
    server_context,
)

log = logging.getLogger("tether.server")

STORAGE_RETRY_LATER = ProtocolError(ErrorCode.SERVER_ERROR, "storage unavailable; retry later")
REFUSED_AGENT = ProtocolError(ErrorCode.UNAUTHORIZED, "agent id or token not recognised; enroll again")
STORAGE_RETRY_SECONDS = 5.0
"""The ``retry_after`` of a session refused because the store failed."""

LISTEN_BACKLOG = 4096
"""Capped by the kernel's net.core.somaxconn."""

INLINE_CHECK_BYTES = 64 * 1024
"""A message larger than this has its results (agents, :func:`.reports.check_results`) or
its request's params (consoles) checked in a worker thread; an agent's batches are at most
this big."""

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


class SessionEnd(Exception):
    """End the session with a session error (4xxx), after telling the peer why."""

    def __init__(self, error: ProtocolError, retry_after: float | None = None) -> None:
        super().__init__(error.message)
        self.error = error
        self.retry_after = retry_after


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
        self.rpc = ConsoleRPC(operations, min_interval=config.min_interval)
        operations.consoles = self
        self.consoles = 0
        """Console sessions open."""
        self.server: Server | None = None
        self.draining = False
        total = config.max_connections or (connection_cap(open_files) if open_files else 0)
        self.limits = ConnectionLimits(config.max_sessions_per_address, exempt_networks(config), total)
        self.shed_log = ShedLog()
        self.throttle = CredentialThrottle([ipaddress.ip_network(n, strict=False) for n in config.login_throttle_exempt])
        self.console_sessions: dict[int, set[tuple[ServerConnection, Codec]]] = {}
        """Open console sessions by the id of the admin token they logged in with."""
        self._closing: set[asyncio.Task[None]] = set()
        self.paused: set[ServerConnection] = set()
        """Sessions whose reading is paused for their frame budget (:meth:`_paused`)."""

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
                                          f"too many connections from {_remote_host(connection)}; retry later\n")
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
        return self.consoles

    def timers_pending(self) -> int:
        return len(self.operations.timers)

    def connections_open(self) -> int | None:
        return self.limits.total

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
        for connection in list(self.paused):
            connection.transport.abort()
        for connection in list(self.server.connections):
            with contextlib.suppress(Exception):
                await connection.close(1001, "tetherd is shutting down")
        await self.server.wait_closed()

    # -- sessions -------------------------------------------------------------------------

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
        if count := self.shed_log.note(reason, time.monotonic()):
            log.warning("event=connections_shed reason=%s count=%d remote=%s limit=%d", reason, count, host,
                        self.limits.limit if reason == "address" else self.limits.total_limit)
        if verdict is Admission.DROP:
            transport.abort()
        else:  # told 4029 once it has upgraded, or cut if it does not upgrade soon
            asyncio.get_running_loop().call_later(SHED_GRACE, transport.abort)

    def lost(self, connection: CountedConnection) -> None:
        if connection.admission is not Admission.DROP:
            self.limits.release(connection.limit_key)

    # -- sessions -------------------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        try:
            if getattr(ws, "admission", Admission.ADMIT) is Admission.REFUSE:
                # Refused before its first frame, so its codec is unknown: MessagePack, the
                # agents' codec; the close code (4029) says it to any client.
                await self._refuse(ws, MSGPACK, ProtocolError(
                    ErrorCode.TOO_MANY_SESSIONS,
                    f"too many connections from {_remote_host(ws)} (limit {self.limits.limit}); retry later",
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
                raise SessionEnd(ProtocolError(
                    ErrorCode.HANDSHAKE_TIMEOUT,
                    f"no hello within {self.config.handshake_timeout:g} s of connecting",
                )) from None
            codec = MSGPACK if isinstance(first, bytes) else JSON
            self.stats.frames_in += 1
            try:
                frame = decode_first(first)
            except ProtocolError as exc:
                raise SessionEnd(ProtocolError(
                    ErrorCode.BAD_HELLO, f"first frame must be hello or enroll: {exc.message}")) from None
            if frame.version != PROTOCOL_VERSION:
                raise SessionEnd(ProtocolError(
                    ErrorCode.UNSUPPORTED_VERSION,
                    f"protocol version {frame.version} is not supported (this tetherd speaks {PROTOCOL_VERSION})",
                ))
            kind = "enroll_key" if isinstance(frame, Enroll) else f"{frame.role}_token"
            if (wait := self.throttle.wait(_remote_host(ws), time.monotonic())) > 0:
                self.stats.logins_throttled += 1
                raise SessionEnd(ProtocolError(ErrorCode.LOGIN_THROTTLED, (
                    f"too many failed logins and enrollments from {_remote_host(ws)}; this one was not looked at: "
                    f"retry in {math.ceil(wait)} s")), retry_after=math.ceil(wait * 1000) / 1000)
            if isinstance(frame, Enroll):
                await self._enroll(ws, codec, frame)
            elif frame.role == "agent":
                await self._agent_session(ws, codec, frame)
            else:
                await self._console_session(ws, codec, frame)
        except SessionEnd as end:
            retry_after = end.retry_after
            if kind is not None and end.error.code in CREDENTIAL_FAILURES:
                retry_after = self._credentials_failed(ws, kind, end.error) or None
            quiet = end.error.code in CREDENTIAL_FAILURES or end.error.code == ErrorCode.LOGIN_THROTTLED
            await self._refuse(ws, codec, end.error, retry_after, quiet=quiet)
        except ConnectionClosed:
            pass
        except StoreError as exc:
            await self._store_failed(ws, codec, exc)
        except Exception:
            log.exception("event=session_crashed")
            await self._refuse(ws, codec, ProtocolError(ErrorCode.SERVER_ERROR, "internal error; see tetherd log"))

    # -- revocation (operations.Consoles) --------------------------------------------------

    def _close_soon(self, ws: ServerConnection, codec: Codec, reason: str) -> None:
        """End a session with 4010 from a task of its own: the request that revoked the
        credential has its answer written first (even in the session being closed)."""
        task = asyncio.get_running_loop().create_task(
            self._refuse(ws, codec, ProtocolError(ErrorCode.UNAUTHORIZED, reason)))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def close(self, token_id: int, reason: str) -> int:
        sessions = self.console_sessions.pop(token_id, set())
        for ws, codec in sessions:
            self._close_soon(ws, codec, reason)
        return len(sessions)

    def _credentials_failed(self, ws: ServerConnection, kind: str, error: ProtocolError) -> float:
        """Count a failed login or enrollment against the peer's address; the seconds its
        next one will wait (:class:`.limits.CredentialThrottle`). Logged at WARNING at most
        once a minute per address, with the failures since the last line."""
        host = _remote_host(ws)
        self.stats.credential_failures[kind] += 1
        wait, to_log = self.throttle.failed(host, time.monotonic())
        if to_log:
            log.warning("event=credentials_refused remote=%s kind=%s failures=%d code=%d retry_after=%g", host, kind,
                        to_log, error.code, math.ceil(wait))
        return math.ceil(wait * 1000) / 1000

    async def _refuse(self, ws: ServerConnection, codec: Codec, error: ProtocolError,
                      retry_after: float | None = None, *, quiet: bool = False) -> None:
        """Tell the peer why its session ends, and end it. ``quiet``: logged at DEBUG only
        (a failed login: the throttle logs those, once per address and minute)."""
        (log.debug if quiet else log.info)("event=session_refused code=%d name=%s remote=%s message=%r",
                                           error.code, error.code.slug, _remote(ws), error.message)
        with contextlib.suppress(ConnectionClosed):
            await send_frame(ws, codec, error_frame(error, retry_after))
            await ws.close(int(error.code), error.code.slug)

    async def _store_failed(self, ws: ServerConnection, codec: Codec, exc: StoreError, context: str = "") -> None:
        """A read or write the session needs failed: the peer is told to come back later."""
        log.error("event=session_store_error%s error=%r", context, exc)
        await self._refuse(ws, codec, STORAGE_RETRY_LATER, retry_after=STORAGE_RETRY_SECONDS)

    async def _enroll(self, ws: ServerConnection, codec: Codec, frame: Enroll) -> None:
        if (refusal := client_certificate_refusal(ws)) is not None:
            raise SessionEnd(refusal)  # before the key is looked at: no use of it is spent
        try:
            tags = check_tags(frame.tags, ErrorCode.BAD_HELLO)
            enrolled = await self.operations.enroll(
                frame.key, frame.machine_uuid, frame.hostname, frame.platform, tags,
                proof=None if frame.agent_id is None else (frame.agent_id, frame.token),
                certificate=client_certificate_sha256(ws) if self.config.bind_client_certificates else None,
            )
        except ProtocolError as exc:
            raise SessionEnd(exc) from None
        self.throttle.succeeded(_remote_host(ws))
        await send_frame(ws, codec, Enrolled(agent_id=enrolled.agent_id, token=enrolled.token, tags=enrolled.tags,
                                             status=enrolled.status, clone_of=enrolled.clone_of))
        await ws.close(1000, "enrolled")

    async def _agent_session(self, ws: ServerConnection, codec: Codec, hello: Hello) -> None:
        if (refusal := client_certificate_refusal(ws)) is not None:
            raise SessionEnd(refusal)
        push = self.operations.push
        changes_seen = push.identity_changes
        auth = await self.store.authenticate_agent(hello.agent_id, hello.token) if hello.agent_id else None
        if auth is None:
            raise SessionEnd(REFUSED_AGENT)
        agent_id = auth.agent_id
        if self.config.bind_client_certificates:
            await self._check_certificate(ws, agent_id, auth.certificate)
        self.throttle.succeeded(_remote_host(ws))
        features = [f for f in hello.features if f in FEATURES]
        session = AgentSession(ws, codec, agent_id, secrets.token_hex(8), self.config.window,
                               set(run_refs(hello.holding, hello.holding_runs)), push.marks, self.stats,
                               batch="batch" in features)
        old = push.register(session)
        # Checked in the same step as the registration: a revocation (removal, merge) that
        # committed while this login read the token either closed the sessions registered
        # then, this one among them, or counted itself here first; then the token is read again.
        recheck = push.identity_changes != changes_seen
        try:
            if old is not None:
                log.info("event=session_replaced agent_id=%s old=%s new=%s", agent_id, old.session_id,
                         session.session_id)
                await self._refuse(old.ws, old.codec, ProtocolError(
                    ErrorCode.REPLACED, "a newer session for this agent opened; this one is closed"))
            if recheck and await self.store.authenticate_agent(hello.agent_id or "", hello.token) != auth:
                raise SessionEnd(REFUSED_AGENT)
        except BaseException:
            push.unregister(session)
            raise
        self.stats.sessions_total["agent"] += 1
        try:
            now = self.clock.time()
            self.operations.hello(agent_id, hello.hostname, hello.platform, hello.commands, hello.agent_version)
            await send_frame(ws, codec, Welcome(
                version=PROTOCOL_VERSION, role="agent", session_id=session.session_id, server_time=now,
                agent_id=agent_id, window=self.config.window, features=features,
            ))
            # Registered before reading, so nothing created meanwhile is missed; offer() dedups.
            # A long queue is read in two: the first page, pushed at once, then the rest.
            first = await self.store.pending_for_agent(agent_id, limit=FIRST_PAGE)
            rest_after = first[-1] if len(first) == FIRST_PAGE else None
            if rest_after is None:
                session.offer_loaded(first)
            else:
                session.offer_first(first)
            if session.holding:
                # Runs the agent holds that the daemon ended while it was away (untask, ttl,
                # polling timeout): the Cancel sent then found no session. Tell it now.
                for delivery_id, state in await self.store.ended_by_daemon(agent_id, [d for d, _ in session.holding]):
                    session.send_control(Cancel(delivery_id=delivery_id, reason=cancel_reason(state)))
            log.info("event=session_open role=agent agent_id=%s session=%s holding=%d remote=%s",
                     agent_id, session.session_id, len(hello.holding), _remote(ws))
            async with asyncio.TaskGroup() as tg:
                pusher = tg.create_task(session.pusher(), name=f"pusher-{agent_id}")
                loader = None if rest_after is None else tg.create_task(
                    self._load_rest(session, rest_after), name=f"loader-{agent_id}")
                try:
                    await self._agent_reader(ws, codec, session)
                except ConnectionClosed:
                    pass  # the agent went away; what it sent before is already queued to the store
                finally:
                    pusher.cancel()
                    if loader is not None:
                        loader.cancel()
        finally:
            push.unregister(session)
            log.info("event=session_closed role=agent agent_id=%s session=%s code=%s",
                     agent_id, session.session_id, ws.close_code)

    async def _check_certificate(self, ws: ServerConnection, agent_id: str, bound: bytes | None) -> None:
        """``bind_client_certificates``: the session shows the certificate the agent is bound
        to, or the agent is bound to none yet (enrolled before the switch): then to this one."""
        shown = client_certificate_sha256(ws)
        if shown is None:
            raise SessionEnd(ProtocolError(ErrorCode.UNAUTHORIZED, CLIENT_CERTIFICATE_REQUIRED))
        if not (bound is None and await self.operations.bind_certificate(agent_id, shown)) and bound != shown:
            raise SessionEnd(ProtocolError(ErrorCode.UNAUTHORIZED, CERTIFICATE_NOT_BOUND))

    async def _load_rest(self, session: AgentSession, after: PushItem) -> None:
        """The rest of a long queue, read while its first page is pushed. If the read
        fails, the session ends as when the first one fails: the agent comes back later."""
        try:
            items = await self.store.pending_for_agent(session.agent_id, after=after)
        except StoreError as exc:
            await self._store_failed(session.ws, session.codec, exc, f" agent_id={session.agent_id}")
            return
        session.offer_loaded(items)

    def _budget(self) -> FrameBudget:
        return FrameBudget(self.config.max_frames_per_second, self.config.frame_burst, asyncio.get_running_loop().time())

    async def _pace(self, ws: ServerConnection, budget: FrameBudget, frames: int, bad: int,
                    tell: Callable[[Frame], Any]) -> None:
        """Charge ``frames`` (and ``bad`` of them answered with an error) to the session's
        budget; over it, stop reading the session for as long as its debt lasts (telling it
        at most once a second), or until the connection closes or its peer leaves."""
        clock = asyncio.get_running_loop().time
        wait = budget.spend(frames + bad * (self.config.bad_frame_cost - 1), clock())
        if wait <= 0:
            return
        self.stats.throttled += 1
        if budget.should_tell(clock()):
            await tell(error_frame(ProtocolError(
                ErrorCode.RATE_LIMITED,
                f"more than {self.config.max_frames_per_second:g} frames a second; reading paused",
            ), retry_after=math.ceil(wait * 1000) / 1000))  # whole ms, never 0
        await self._paused(ws, wait)

    async def _paused(self, ws: ServerConnection, seconds: float) -> None:
        """Wait ``seconds`` without reading ``ws``, or until the connection closes, or its
        peer has left (then it is closed, so the session ends at once).

        A session that is not read has its socket paused too, so a peer's close is not read
        either; the kernel knows it all the same: the connection leaves TCP's ESTABLISHED
        state when the peer's FIN or RST arrives, whatever data waits unread before it. That
        is looked at every :data:`PEER_CHECK_EVERY` seconds of the pause. A drain cuts a
        paused session (it could not read a closing handshake)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        self.paused.add(ws)
        try:
            while (left := deadline - loop.time()) > 0:
                try:
                    async with asyncio.timeout(min(left, PEER_CHECK_EVERY)):
                        await ws.wait_closed()
                    return
                except TimeoutError:
                    pass
                if peer_left(ws):
                    ws.transport.abort()
                    return
        finally:
            self.paused.discard(ws)

    async def _agent_reader(self, ws: ServerConnection, codec: Codec, session: AgentSession) -> None:
        stats = self.stats
        budget = self._budget()
        floor = self.config.min_interval

        async def tell(frame: Frame) -> None:
            session.send_control(frame)

        async for message in ws:
            stats.frames_in += 1
            try:
                frame = decode_to_daemon(message)
            except ProtocolError as exc:
                session.tell(error_frame(exc))
                await self._pace(ws, budget, 1, 1, tell)
                continue
            charged = 0
            if isinstance(frame, Batch):
                # Its frames are charged before they are decoded: over budget, it waits first.
                charged = len(frame.frames)
                await self._pace(ws, budget, charged, 0, tell)
                frames: list[Frame | ProtocolError] = unbatch(frame, codec.binary, to_daemon=True)
            else:
                frames = [frame]
            weight = message_weight(frames)
            if weight > MAX_MESSAGE_WEIGHT:
                session.tell(error_frame(ProtocolError(ErrorCode.INVALID_FRAME, (
                    f"a message may carry at most {MAX_MESSAGE_WEIGHT} frames and delivery ids together, not "
                    f"{weight}; send them in several messages"))))
                await self._pace(ws, budget, weight - charged, 1, tell)
                continue
            reports: Sequence[Report] = frames
            large = len(message) > INLINE_CHECK_BYTES
            if large:
                # Checking a large message's outputs and args walks them in Python: in a
                # worker thread, which lets the event loop in between (this session waits).
                # The yield first lets the loop answer what came in while it was decoding.
                await asyncio.sleep(0)
                reports = await asyncio.to_thread(check_results, frames, codec, floor)
            bad = submit_reports(session, codec, reports, self.operations, floor)
            if large:
                # Freeing a large message's values costs as much as building them: now, and
                # then a yield, rather than at the next message, after its own decoding.
                del frame, frames, reports
                await asyncio.sleep(0)
            await self._pace(ws, budget, weight - charged, bad, tell)

    async def _console_session(self, ws: ServerConnection, codec: Codec, hello: Hello) -> None:
        login = await self.store.admin_login(hello.token) if hello.token else None
        if login is None:
            raise SessionEnd(ProtocolError(ErrorCode.UNAUTHORIZED, "admin token not recognised"))
        token_id, role = login
        self.throttle.succeeded(_remote_host(ws))
        mine = (ws, codec)
        self.console_sessions.setdefault(token_id, set()).add(mine)
        session_id = secrets.token_hex(8)
        await send_frame(ws, codec, Welcome(
            version=PROTOCOL_VERSION, role="console", session_id=session_id, server_time=self.clock.time(),
        ))
        self.stats.sessions_total["console"] += 1
        self.consoles += 1
        send_lock = asyncio.Lock()

        async def send(frame: Frame) -> None:
            async with send_lock:
                await send_frame(ws, codec, frame)
                self.stats.frames_out += 1

        requests: set[asyncio.Task[None]] = set()
        budget = self._budget()
        slots = asyncio.Semaphore(self.config.max_requests_in_flight)

        def done(task: asyncio.Task[None]) -> None:
            requests.discard(task)
            slots.release()

        try:
            async with asyncio.TaskGroup() as tg:
                try:
                    async for message in ws:
                        self.stats.frames_in += 1
                        try:
                            frame = decode_to_daemon(message)
                        except ProtocolError as exc:
                            await send(error_frame(exc))
                            await self._pace(ws, budget, 1, 1, send)
                            continue
                        if not isinstance(frame, Request):
                            await send(error_frame(ProtocolError(
                                ErrorCode.UNEXPECTED_FRAME,
                                f"unexpected {type(frame).__name__.lower()} frame: a console session sends req frames")))
                            await self._pace(ws, budget, 1, 1, send)
                            continue
                        await self._pace(ws, budget, 1, 0, send)
                        await slots.acquire()  # at most max_requests_in_flight unanswered
                        task = tg.create_task(self._serve_request(
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
            self.consoles -= 1
            same_token = self.console_sessions.get(token_id)
            if same_token is not None:
                same_token.discard(mine)
                if not same_token:
                    del self.console_sessions[token_id]

    async def _serve_request(self, req: Request, send: Callable[[Frame], Awaitable[None]], role: str, *,
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


PEER_CHECK_EVERY = 0.25
"""Seconds between two looks, during a session's pause, at whether its peer has left."""

_TCP_ESTABLISHED = 1  # include/net/tcp_states.h


def peer_left(ws: ServerConnection) -> bool:
    """The TCP connection under ``ws`` is no longer established (the peer closed or reset
    it). Linux only (``TCP_INFO``); elsewhere, False."""
    sock = ws.transport.get_extra_info("socket")
    option = getattr(socket, "TCP_INFO", None)
    if sock is None or option is None:
        return False
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, option, 1)
    except OSError:
        return False
    return bool(info[0] != _TCP_ESTABLISHED)


def metrics_allowed(token: str, authorization: str) -> bool:
    """``/metrics`` may be read: no ``metrics_token`` is set, or the request's
    ``Authorization`` is ``Bearer`` that token (compared in constant time)."""
    if not token:
        return True
    scheme, _, given = authorization.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def _remote_host(ws: ServerConnection) -> str:
    try:
        return str(ws.remote_address[0])
    except (TypeError, IndexError):
        return ""


def _remote(ws: ServerConnection) -> str:
    try:
        host, port = ws.remote_address[:2]
        return f"{host}:{port}"
    except (TypeError, ValueError):
        return "?"

