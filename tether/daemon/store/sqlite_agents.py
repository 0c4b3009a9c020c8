"""Agents' identities in the SQLite store: enrollment, login, revocation, removal, merge.

Which agent an enrollment is and which tags it gets are decided by
:func:`tether.protocol.enrollment.decide`; this module reads the facts it needs and applies
its answer, in one write. Promises: an enrollment never rebinds an enrolled agent's id or
token without that agent's current token; a removed agent's token stops working and its
unfinished deliveries end as cancelled in the same commit; an agent merged into another
logs in (with the token it had) as that other agent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from ...protocol.codec import unpack
from ...protocol.enrollment import Proof, decide
from ...protocol.errors import ErrorCode, ProtocolError
from .. import credentials
from ..effects import Effects
from . import AgentAuth, Enrollment
from .sqlite_tasks import LIVE, check_agent, materialise, materialise_selected
from .writer import Op, Tx

_LOGIN = ("SELECT coalesce(o.id, a.id), coalesce(o.token_hash, a.token_hash),"
          " CASE WHEN o.id IS NULL THEN a.cert_sha256 ELSE o.cert_sha256 END FROM agents a"
          " LEFT JOIN agents o ON o.id = a.merged_into WHERE a.id = ?")
"""The id an agent id logs in as, the digest its token must match and the certificate it is
bound to: a merged agent's are those of the agent it was merged into. One indexed read, on
every agent's hello."""


class SQLiteAgents:
    """Mixed into :class:`~.sqlite.SQLiteStore`, which provides ``_submit``, ``_read`` and
    ``_end_unfinished``."""

    _submit: Callable[[Op], asyncio.Future[Any]]
    _read: Callable[..., Awaitable[list[Any]]]
    _end_unfinished: Callable[[Tx, Effects[Any], str, float], None]

    async def enroll(
        self, key: str, machine_uuid: str, hostname: str, platform: str, tags: list[str], now: float,
        *, proof: tuple[str, str] | None = None, certificate: bytes | None = None,
    ) -> Effects[Enrollment]:
        """``proof``: the ``(agent_id, token)`` of the agent the enrollee says it is.
        ``certificate``: the SHA-256 of its client certificate, to bind the agent to."""
        key_hash = credentials.digest(credentials.normalise_enroll_key(key))
        token = credentials.new_agent_token()

        def op(tx: Tx) -> Effects[Enrollment]:
            key_id, key_tags, uses_left, allow = _usable_key(tx, key_hash, now)
            twin = None
            if proof is None and machine_uuid:
                row = tx.one(f"SELECT id FROM agents WHERE machine_uuid = ? AND {LIVE}"
                             " ORDER BY clone_of IS NOT NULL, enrolled_at LIMIT 1", (machine_uuid,))
                twin = row[0] if row else None
            decision = decide(key_tags=key_tags, allow_requested=allow, asked=tags, twin=twin,
                              proof=None if proof is None else _prove(tx, *proof), machine_uuid=machine_uuid)
            if uses_left is not None:
                tx.execute("UPDATE enroll_keys SET uses_left = uses_left - 1 WHERE id = ?", (key_id,))
            if decision.agent_id is not None:
                assert proof is not None
                tx.execute("UPDATE agents SET hostname = ?, platform = ?, machine_uuid = ?,"
                           " cert_sha256 = coalesce(?, cert_sha256) WHERE id = ?",
                           (hostname, platform, machine_uuid, certificate, decision.agent_id))
                return Effects(Enrollment(agent_id=decision.agent_id, token=proof[1], tags=decision.tags,
                                          status="existing"))
            agent_id = credentials.new_agent_id()
            tx.execute(
                "INSERT INTO agents (id, token_hash, machine_uuid, hostname, platform, enrolled_at, clone_of,"
                " cert_sha256) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (agent_id, credentials.digest(token), machine_uuid, hostname, platform, now, decision.clone_of,
                 certificate),
            )
            tx.conn.executemany("INSERT INTO agent_tags (agent_id, tag) VALUES (?, ?)",
                                [(agent_id, t) for t in decision.tags])
            if decision.replaces is not None:
                tx.execute("UPDATE agents SET replaced_by = ?, token_hash = X'' WHERE id = ?",
                           (agent_id, decision.replaces))
            # An agent enrolling is not online yet: it gets these when its session opens.
            items = materialise(tx, agent_id, decision.tags, now) + materialise_selected(tx, agent_id, now)
            return Effects(Enrollment(agent_id=agent_id, token=token, tags=decision.tags,
                                      clone_of=decision.clone_of or "", replaces=decision.replaces or ""),
                           items=items)

        result: Effects[Enrollment] = await self._submit(op)
        return result

    async def authenticate_agent(self, agent_id: str, token: str) -> AgentAuth | None:
        """The agent ``agent_id`` logs in as, if ``token`` is its current one."""
        rows = await self._read(_LOGIN, (agent_id,))
        if not rows or not credentials.matches(token, rows[0][1]):
            return None
        return AgentAuth(agent_id=rows[0][0], certificate=rows[0][2])

    async def bind_certificate(self, agent_id: str, certificate: bytes) -> Effects[bool]:
        def op(tx: Tx) -> Effects[bool]:
            return Effects(bool(tx.execute("UPDATE agents SET cert_sha256 = ? WHERE id = ? AND cert_sha256 IS NULL",
                                           (certificate, agent_id)).rowcount))

        result: Effects[bool] = await self._submit(op)
        return result

    async def revoke_agent(self, agent_id: str) -> Effects[bool]:
        """The agent's token stops working (its digest is cleared): it can neither log in
        nor re-enroll as itself; enrolling again makes a new agent."""

        def op(tx: Tx) -> Effects[bool]:
            check_agent(tx, agent_id)
            return Effects(bool(tx.execute(
                "UPDATE agents SET token_hash = X'' WHERE id = ? AND length(token_hash) > 0", (agent_id,)).rowcount))

        result: Effects[bool] = await self._submit(op)
        return result

    async def approve_agent(self, agent_id: str) -> Effects[None]:
        """A possible clone is an agent of its own: the mark is cleared."""

        def op(tx: Tx) -> Effects[None]:
            _clone_of(tx, agent_id, "approve")
            tx.execute("UPDATE agents SET clone_of = NULL WHERE id = ?", (agent_id,))
            return Effects(None)

        result: Effects[None] = await self._submit(op)
        return result

    async def remove_agent(self, agent_id: str, now: float) -> Effects[None]:
        """The agent's token stops working, its unfinished deliveries end as cancelled, it
        loses its tags and leaves every target and listing; its row stays for history."""

        def op(tx: Tx) -> Effects[None]:
            check_agent(tx, agent_id)
            effects: Effects[None] = Effects(None)
            self._end_unfinished(tx, effects, agent_id, now)
            _retire(tx, agent_id, now)
            return effects

        result: Effects[None] = await self._submit(op)
        return result

    async def merge_agent(self, clone_id: str, now: float) -> Effects[str]:
        """A possible clone takes over the identity of the agent it is a clone of: that
        agent keeps its id, tags and deliveries and gets the clone's token (its own stops
        working); the clone is removed (its unfinished deliveries cancelled) and its id
        logs in as that agent from then on. Returns that agent's id and the cancellations."""

        def op(tx: Tx) -> Effects[str]:
            original = _clone_of(tx, clone_id, "merge")
            if not tx.one(f"SELECT 1 FROM agents WHERE id = ? AND {LIVE}", (original,)):
                raise ProtocolError(ErrorCode.UNKNOWN_AGENT, (
                    f"agent {original}, of which {clone_id} is a possible clone, was removed: nothing to merge "
                    f"into (tetherctl agent approve {clone_id} keeps it as an agent of its own)"))
            tx.execute(
                "UPDATE agents SET (token_hash, machine_uuid, hostname, platform) ="
                " (SELECT token_hash, machine_uuid, hostname, platform FROM agents WHERE id = ?) WHERE id = ?",
                (clone_id, original))
            effects = Effects(original)
            self._end_unfinished(tx, effects, clone_id, now)
            tx.execute("UPDATE agents SET merged_into = ? WHERE id = ?", (original, clone_id))
            _retire(tx, clone_id, now)
            return effects

        result: Effects[str] = await self._submit(op)
        return result


def _usable_key(tx: Tx, key_hash: bytes, now: float) -> tuple[int, list[str], int | None, bool]:
    """The key's id, tags, uses left and whether it allows requested tags; or the refusal."""
    row = tx.one(
        "SELECT id, tags, expires_at, uses_left, allow_requested_tags FROM enroll_keys"
        " WHERE key_hash = ? AND revoked_at IS NULL", (key_hash,))
    if row is None:
        raise ProtocolError(ErrorCode.ENROLL_KEY_UNKNOWN, "unknown or revoked enrollment key")
    key_id, tags, expires_at, uses_left, allow = row
    if expires_at is not None and expires_at <= now:
        raise ProtocolError(ErrorCode.ENROLL_KEY_EXPIRED, "this enrollment key has expired; ask for a new one")
    if uses_left is not None and uses_left <= 0:
        raise ProtocolError(ErrorCode.ENROLL_KEY_EXHAUSTED, "this enrollment key has been used up")
    return key_id, unpack(tags), uses_left, bool(allow)


def _prove(tx: Tx, agent_id: str, token: str) -> Proof:
    row = tx.one(_LOGIN, (agent_id,))
    if row is None or not credentials.matches(token, row[1]):
        return Proof(agent_id, ok=False)
    tags = [r[0] for r in tx.execute("SELECT tag FROM agent_tags WHERE agent_id = ?", (row[0],))]
    return Proof(row[0], ok=True, tags=tags,
                 machine_uuid=tx.one("SELECT machine_uuid FROM agents WHERE id = ?", (row[0],))[0] or "")


def _clone_of(tx: Tx, agent_id: str, verb: str) -> str:
    """The agent a live possible clone is a clone of; refused for any other agent."""
    check_agent(tx, agent_id)
    row = tx.one("SELECT clone_of FROM agents WHERE id = ?", (agent_id,))
    if row[0] is None:
        raise ProtocolError(ErrorCode.INVALID_PARAMS, (
            f"agent {agent_id} is not marked a possible clone; nothing to {verb} "
            "(tetherctl agents shows possible clones)"))
    original: str = row[0]
    return original


def _retire(tx: Tx, agent_id: str, now: float) -> None:
    """Take the agent out of every target and listing (its row stays for history)."""
    tx.execute("UPDATE agents SET removed_at = ?, token_hash = X'' WHERE id = ?", (now, agent_id))
    tx.execute("DELETE FROM agent_tags WHERE agent_id = ?", (agent_id,))
