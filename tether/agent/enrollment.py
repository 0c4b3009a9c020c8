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

from tether.protocol import MSGPACK, PROTOCOL_VERSION, Enroll, Enrolled, Error, ErrorCode, decode_from_daemon

from . import host
from .journal import Identity
from .tls import TLSFiles, client_context


class EnrollmentError(Exception):
    """The daemon refused the enrollment (or ended it without an answer)."""

    def __init__(self, code: int, name: str, message: str) -> None:
        super().__init__(f"{name} ({code}): {message}")
        self.code = code
        self.name = name
        self.message = message


@dataclass(frozen=True, slots=True)
class Enrollment:
    """What an enrollment gave: the identity to keep, and how the daemon saw it."""

    identity: Identity
    existing: bool = False
    """The proof was accepted: the same agent (same id and token) as before."""
    clone_of: str = ""
    """A new agent enrolled from the machine UUID of this enrolled one (a possible clone)."""


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

    Raises :class:`EnrollmentError` if the daemon refuses, ``OSError`` / ``TimeoutError`` /
    ``websockets.exceptions.InvalidHandshake`` if it cannot be reached (``ssl.SSLError``, an
    ``OSError``, if TLS fails), :class:`~tether.agent.tls.TLSFileError` for a bad TLS file.
    """
    frame = Enroll(
        version=PROTOCOL_VERSION, key=key, machine_uuid=machine_uuid, tags=list(tags),
        hostname=hostname if hostname is not None else host.hostname(),
        platform=platform if platform is not None else host.platform_name(),
        agent_id=None if proof is None else proof.agent_id, token="" if proof is None else proof.token,
    )
    tls = tls or TLSFiles()
    context = client_context(server, tls)
    async with connect(
        server, open_timeout=handshake_timeout, compression=None, max_size=host.MAX_FRAME_BYTES,
        user_agent_header=host.USER_AGENT, ssl=context,
    ) as ws:
        await ws.send(MSGPACK.encode(frame))
        try:
            async with asyncio.timeout(handshake_timeout):
                data = await ws.recv()
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd is not None else 1006
            raise EnrollmentError(code, _slug(code), "the daemon closed the connection without an answer") from None
    answer = decode_from_daemon(data)
    if isinstance(answer, Error):
        raise EnrollmentError(answer.code, answer.name, answer.message)
    if not isinstance(answer, Enrolled):
        raise EnrollmentError(0, "unexpected_frame", f"expected enrolled, got {type(answer).__name__}")
    identity = Identity(
        server=server, agent_id=answer.agent_id, token=answer.token,
        machine_uuid=machine_uuid, tags=tuple(answer.tags), tls=tls,
    )
    return Enrollment(identity, existing=answer.status == "existing", clone_of=answer.clone_of)


def _slug(code: int) -> str:
    try:
        return ErrorCode(code).slug
    except ValueError:
        return "connection_closed"
