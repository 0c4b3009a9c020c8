"""Enrollment: trade an enrollment key for an agent id and a secret token.

Armadito "Enrollment": the agent presents a key (``AAAAA-AAAAA-AAAAA-AAAAA-AAAAA``) and its
machine UUID; the daemon answers with a new agent's id and token. An agent re-enrolling
proves who it is with its id and current token (``proof``) and keeps both; without proof
the daemon never gives an enrolled agent's id away (a machine UUID it knows makes a new
agent marked a possible clone). It is its own short session: ``enroll`` -> ``enrolled`` |
``error``, then the daemon closes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tether.protocol import MSGPACK, Enrolled
from tether.protocol.errors import SessionClosed
from tether.protocol.session import ClientSession, enroll_request

from . import host
from .journal import Identity
from .tls import TLSFiles, client_context

EnrollmentError = SessionClosed
"""What :func:`enroll_agent` raises when the daemon refuses (the name from before the agent
and the console shared :mod:`tether.protocol.errors`' tree)."""


@dataclass(frozen=True, slots=True)
class Enrollment:
    """What an enrollment gave: the identity to keep, and how the daemon saw it."""

    identity: Identity
    existing: bool = False
    """The proof was accepted: the same agent (same id and token) as before."""
    clone_of: str = ""
    """A new agent enrolled from the machine UUID of this enrolled one (a possible clone)."""
    replaces: str = ""
    """The agent this one proved it was, from another machine UUID: a new agent replacing it."""


async def enroll(server: str, key: str, **options: Any) -> Identity:
    """:func:`enroll_agent` with the same options; only the :class:`Identity` to store."""
    return (await enroll_agent(server, key, **options)).identity


async def enroll_agent(
    server: str,
    key: str,
    *,
    machine_uuid: str,
    tags: Sequence[str] = (),
    hostname: str | None = None,
    platform: str | None = None,
    handshake_timeout: float = 10.0,
    tls: TLSFiles | None = None,
    proof: Identity | None = None,
) -> Enrollment:
    """Enroll with the daemon at ``server``: the identity to store in the journal, with
    ``tls`` (the files a wss:// daemon is reached with, kept for ``run``). ``proof``: the
    identity this agent has now, to re-enroll as that same agent.

    Raises :class:`~tether.protocol.errors.SessionClosed` if the daemon refuses, ``OSError`` / ``TimeoutError`` /
    ``websockets.exceptions.InvalidHandshake`` if it cannot be reached (``ssl.SSLError``, an
    ``OSError``, if TLS fails), :class:`~tether.agent.tls.TLSFileError` for a bad TLS file.
    """
    session = ClientSession(enroll_request(
        key, machine_uuid=machine_uuid, tags=tags,
        hostname=hostname if hostname is not None else host.hostname(),
        platform=platform if platform is not None else host.platform_name(),
        proof=None if proof is None else (proof.agent_id, proof.token),
    ), MSGPACK)
    tls = tls or TLSFiles()
    context = client_context(server, tls)
    async with connect(
        server, open_timeout=handshake_timeout, compression=None, max_size=host.MAX_FRAME_BYTES,
        user_agent_header=host.USER_AGENT, ssl=context,
    ) as ws:
        await ws.send(session.opening())
        try:
            async with asyncio.timeout(handshake_timeout):
                data = await ws.recv()
        except ConnectionClosed as exc:
            raise session.closed(*((exc.rcvd.code, exc.rcvd.reason) if exc.rcvd else (None,))) from None
    [answer] = session.receive(data)  # an error, or no answer: SessionClosed
    assert isinstance(answer, Enrolled)
    identity = Identity(
        server=server, agent_id=answer.agent_id, token=answer.token,
        machine_uuid=machine_uuid, tags=tuple(answer.tags), tls=tls,
    )
    return Enrollment(identity, existing=answer.status == "existing", clone_of=answer.clone_of,
                      replaces=answer.replaces)

