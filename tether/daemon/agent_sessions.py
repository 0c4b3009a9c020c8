"""Agents' connections: an enrollment, and the persistent session of an enrolled agent.

A session is registered (:mod:`.push`) before its queue is read, so nothing committed
meanwhile is missed; its pushes are written by its own pusher (:mod:`.session`), its
reports become operations (:mod:`.reports`), and what it sends is paced by its frame
budget. One agent's bad input never affects another's session.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Sequence

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from ..protocol.codec import Codec
from ..protocol.errors import ErrorCode, ProtocolError
from ..protocol.frames import Cancel, Enroll, Enrolled, Frame, Hello
from ..protocol.lifecycle import cancel_reason
from ..protocol.session import DRAINED, Inbox, granted, holding, welcome
from ..protocol.tags import check_tags
from .config import Config
from .effects import PushItem
from .limits import CredentialThrottle
from .operations import Operations
from .peer import INLINE_CHECK_BYTES, Pacing, SessionEnd, refuse, remote, remote_host, store_failed
from .reports import Report, check_results, submit_reports
from .session import FIRST_PAGE, AgentSession, send_frame
from .store import StoreError
from .tls import (
    CERTIFICATE_NOT_BOUND,
    CLIENT_CERTIFICATE_REQUIRED,
    client_certificate_refusal,
    client_certificate_sha256,
)

log = logging.getLogger("tether.server")

REFUSED_AGENT = ProtocolError(ErrorCode.UNAUTHORIZED, "agent id or token not recognised; enroll again")

class AgentSessions:
    def __init__(self, config: Config, operations: Operations, pacing: Pacing, throttle: CredentialThrottle) -> None:
        self.config = config
        self.operations = operations
        self.store = operations.store
        self.pacing = pacing
        self.throttle = throttle
        self.first_page = FIRST_PAGE
        """How many queued deliveries a session reads before it starts pushing."""

    async def enroll(self, ws: ServerConnection, codec: Codec, frame: Enroll) -> None:
        """Enroll the agent (:meth:`.operations.Operations.enroll`), answer, close."""
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
        self.throttle.succeeded(remote_host(ws))
        await send_frame(ws, codec, Enrolled(agent_id=enrolled.agent_id, token=enrolled.token, tags=enrolled.tags,
                                             status=enrolled.status, clone_of=enrolled.clone_of,
                                             replaces=enrolled.replaces))
        await ws.close(1000, "enrolled")

    async def serve(self, ws: ServerConnection, codec: Codec, hello: Hello) -> None:
        """An agent's session, from its login until it ends."""
        if (refusal := client_certificate_refusal(ws)) is not None:
            raise SessionEnd(refusal)
        operations, store, push = self.operations, self.store, self.operations.push
        changes_seen = push.identity_changes
        auth = await store.authenticate_agent(hello.agent_id, hello.token) if hello.agent_id else None
        if auth is None:
            raise SessionEnd(REFUSED_AGENT)
        agent_id = auth.agent_id
        if self.config.bind_client_certificates:
            await self._check_certificate(ws, agent_id, auth.certificate)
        self.throttle.succeeded(remote_host(ws))
        session = AgentSession(ws, codec, agent_id, secrets.token_hex(8), self.config.window, holding(hello),
                               push.marks, operations.stats, batch="batch" in (features := granted(hello.features)),
                               drained=DRAINED in features)
        old = push.register(session)
        # Checked in the same step as the registration: a revocation (removal, merge) that
        # committed while this login read the token either closed the sessions registered
        # then, this one among them, or counted itself here first; then the token is read again.
        recheck = push.identity_changes != changes_seen
        try:
            if old is not None:
                log.info("event=session_replaced agent_id=%s old=%s new=%s", agent_id, old.session_id,
                         session.session_id)
                await refuse(old.ws, old.codec, ProtocolError(
                    ErrorCode.REPLACED, "a newer session for this agent opened; this one is closed"))
            if recheck and await store.authenticate_agent(hello.agent_id or "", hello.token) != auth:
                raise SessionEnd(REFUSED_AGENT)
        except BaseException:
            push.unregister(session)
            raise
        operations.stats.sessions_total["agent"] += 1
        try:
            operations.hello(agent_id, hello.hostname, hello.platform, hello.commands, hello.agent_version)
            await send_frame(ws, codec, welcome(hello, session_id=session.session_id,
                                                server_time=operations.clock.time(), agent_id=agent_id,
                                                window=self.config.window))
            # Registered before reading, so nothing created meanwhile is missed; offer() dedups.
            # A long queue is read in two: the first page, pushed at once, then the rest.
            first = await store.pending_for_agent(agent_id, limit=self.first_page)
            rest_after = first[-1] if len(first) == self.first_page else None
            if rest_after is None:
                session.offer_loaded(first)
            else:
                session.offer_first(first)
            if session.holding:
                # Runs the agent holds that the daemon ended while it was away (untask, ttl,
                # polling timeout): the Cancel sent then found no session. Tell it now.
                for delivery_id, state in await store.ended_by_daemon(agent_id, [d for d, _ in session.holding]):
                    session.send_control(Cancel(delivery_id=delivery_id, reason=cancel_reason(state)))
            log.info("event=session_open role=agent agent_id=%s session=%s holding=%d remote=%s",
                     agent_id, session.session_id, len(hello.holding), remote(ws))
            async with asyncio.TaskGroup() as tg:
                pusher = tg.create_task(session.pusher(), name=f"pusher-{agent_id}")
                loader = None if rest_after is None else tg.create_task(
                    self._load_rest(session, rest_after), name=f"loader-{agent_id}")
                try:
                    await self._read(ws, codec, session)
                except ConnectionClosed:
                    pass  # the agent went away; what it sent before is already queued to the store
                finally:
                    pusher.cancel()
                    if loader is not None:
                        loader.cancel()
        finally:
            online = push.sessions.get(agent_id) is session  # not replaced by a newer one, nor cut off
            push.unregister(session)
            operations.alerts_flush(agent_id)
            if online:
                operations.goodbye(agent_id)
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
            await store_failed(session.ws, session.codec, exc, f" agent_id={session.agent_id}")
            return
        session.offer_loaded(items)

    async def _read(self, ws: ServerConnection, codec: Codec, session: AgentSession) -> None:
        """Every message the agent sends, until it leaves: its reports, paced."""
        stats, pacing, operations = self.operations.stats, self.pacing, self.operations
        budget = pacing.budget()
        floor = self.config.min_interval

        async def tell(frame: Frame) -> None:
            session.send_control(frame)

        inbox = Inbox("agent", codec)
        async for message in ws:
            stats.frames_in += 1
            if upfront := inbox.receive(message):  # a batch: over budget, it waits before it is decoded
                await pacing.pace(ws, budget, upfront, 0, tell)
            frames = inbox.frames()
            if inbox.error is not None:
                session.tell(inbox.error)
                await pacing.pace(ws, budget, inbox.charge, 1, tell)
                continue
            reports: Sequence[Report] = frames
            large = len(message) > INLINE_CHECK_BYTES
            if large:
                # Checking a large message's outputs and args walks them in Python: in a
                # worker thread, which lets the event loop in between (this session waits).
                # The yield first lets the loop answer what came in while it was decoding.
                await asyncio.sleep(0)
                reports = await asyncio.to_thread(check_results, frames, codec, floor)
            bad = submit_reports(session, codec, reports, operations, floor)
            if large:
                # Freeing a large message's values costs as much as building them: now, and
                # then a yield, rather than at the next message, after its own decoding.
                del frames, reports
                await asyncio.sleep(0)
            await pacing.pace(ws, budget, inbox.charge, bad, tell)
