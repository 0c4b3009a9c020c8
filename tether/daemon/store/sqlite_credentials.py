"""Credentials in the SQLite store: admin tokens, enrollment keys, agent tokens.

Every secret is a high-entropy random value stored as its SHA-256 digest
(:mod:`tether.daemon.credentials`); the clear value exists only in the answer to the
call that made it. Revoking one makes the daemon refuse it from the next read on: the
server also closes the sessions already open with it (``server.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from ...protocol.codec import pack, unpack
from ...protocol.console import KeyView, TokenView
from ...protocol.errors import ErrorCode, ProtocolError
from .. import credentials
from . import AgentAuth, Enrollment
from .sqlite_tasks import materialise, materialise_selected
from .writer import MAX_ID, Op, Tx


class SQLiteCredentials:
    """Mixed into :class:`~.sqlite.SQLiteStore`, which provides ``_submit`` and ``_read``."""

    _submit: Callable[[Op], asyncio.Future[Any]]
    _read: Callable[..., Awaitable[list[Any]]]

    async def bootstrap(self, now: float) -> tuple[str, str] | None:
        def op(tx: Tx) -> tuple[str, str] | None:
            if tx.one("SELECT 1 FROM admin_tokens LIMIT 1"):
                return None
            token = credentials.new_admin_token()
            key = credentials.new_enroll_key()
            tx.execute(
                "INSERT INTO admin_tokens (token_hash, role, label, created_at) VALUES (?, 'admin', 'initial', ?)",
                (credentials.digest(token), now),
            )
            tx.execute(
                "INSERT INTO enroll_keys (key_hash, tags, created_at) VALUES (?, ?, ?)",
                (credentials.digest(key), pack([]), now),
            )
            return token, key

        result: tuple[str, str] | None = await self._submit(op)
        return result

    async def create_admin_token(self, role: str, label: str, now: float) -> str:
        return (await self.create_token(role, label, now)).token

    async def create_token(self, role: str, label: str, now: float) -> TokenView:
        token = credentials.new_admin_token()

        def op(tx: Tx) -> int:
            return tx.execute(
                "INSERT INTO admin_tokens (token_hash, role, label, created_at) VALUES (?, ?, ?, ?)",
                (credentials.digest(token), role, label, now),
            ).lastrowid or 0

        token_id: int = await self._submit(op)
        return TokenView(token_id=token_id, role=role, label=label, created_at=now, revoked_at=None, token=token)

    async def list_tokens(self) -> list[TokenView]:
        rows = await self._read("SELECT id, role, label, created_at, revoked_at FROM admin_tokens ORDER BY id")
        return [TokenView(token_id=r[0], role=r[1], label=r[2], created_at=r[3], revoked_at=r[4]) for r in rows]

    async def revoke_token(self, token_id: int, now: float) -> bool:
        def op(tx: Tx) -> bool:
            row = tx.one("SELECT role, revoked_at FROM admin_tokens WHERE id = ?", (min(token_id, MAX_ID),))
            if row is None:
                raise ProtocolError(ErrorCode.UNKNOWN_TOKEN, f"no admin token with id {token_id}")
            if row[1] is not None:
                return False
            if row[0] == "admin" and not tx.one(
                "SELECT 1 FROM admin_tokens WHERE role = 'admin' AND revoked_at IS NULL AND id != ?", (token_id,)
            ):
                raise ProtocolError(ErrorCode.LAST_ADMIN_TOKEN,
                                    f"token {token_id} is the last admin token; create another admin token first")
            tx.execute("UPDATE admin_tokens SET revoked_at = ? WHERE id = ?", (now, token_id))
            return True

        result: bool = await self._submit(op)
        return result

    async def create_enroll_key(
        self, tags: list[str], expires_at: float | None, uses: int | None, now: float
    ) -> str:
        return (await self.create_key(tags, expires_at, uses, now)).key

    async def create_key(self, tags: list[str], expires_at: float | None, uses: int | None, now: float) -> KeyView:
        key = credentials.new_enroll_key()
        tags = sorted(set(tags))

        def op(tx: Tx) -> int:
            return tx.execute(
                "INSERT INTO enroll_keys (key_hash, tags, created_at, expires_at, uses_left) VALUES (?, ?, ?, ?, ?)",
                (credentials.digest(key), pack(tags), now, expires_at, uses),
            ).lastrowid or 0

        key_id: int = await self._submit(op)
        return KeyView(key_id=key_id, tags=tags, created_at=now, expires_at=expires_at, uses_left=uses,
                       revoked_at=None, key=key)

    async def list_keys(self) -> list[KeyView]:
        rows = await self._read(
            "SELECT id, tags, created_at, expires_at, uses_left, revoked_at FROM enroll_keys ORDER BY id")
        return [KeyView(key_id=r[0], tags=unpack(r[1]), created_at=r[2], expires_at=r[3], uses_left=r[4],
                        revoked_at=r[5]) for r in rows]

    async def revoke_key(self, key_id: int, now: float) -> bool:
        def op(tx: Tx) -> bool:
            row = tx.one("SELECT revoked_at FROM enroll_keys WHERE id = ?", (min(key_id, MAX_ID),))
            if row is None:
                raise ProtocolError(ErrorCode.UNKNOWN_KEY, f"no enrollment key with id {key_id}")
            if row[0] is not None:
                return False
            tx.execute("UPDATE enroll_keys SET revoked_at = ? WHERE id = ?", (now, key_id))
            return True

        result: bool = await self._submit(op)
        return result

    async def revoke_agent(self, agent_id: str) -> bool:
        """The agent's token stops working (its digest is cleared). Enrolling again with a
        valid key gives the machine a new token: revoke the key too to keep it out."""

        def op(tx: Tx) -> bool:
            row = tx.one("SELECT length(token_hash) FROM agents WHERE id = ?", (agent_id,))
            if row is None:
                raise ProtocolError(ErrorCode.UNKNOWN_AGENT, f"no agent with id {agent_id!r}")
            if row[0] == 0:
                return False
            tx.execute("UPDATE agents SET token_hash = X'' WHERE id = ?", (agent_id,))
            return True

        result: bool = await self._submit(op)
        return result

    async def admin_login(self, token: str) -> tuple[int, str] | None:
        """The id and role of an admin token that is not revoked."""
        rows = await self._read(
            "SELECT id, role FROM admin_tokens WHERE token_hash = ? AND revoked_at IS NULL",
            (credentials.digest(token),),
        )
        return (rows[0][0], rows[0][1]) if rows else None

    async def enroll(
        self, key: str, machine_uuid: str, hostname: str, platform: str, tags: list[str], now: float
    ) -> Enrollment:
        key_hash = credentials.digest(credentials.normalise_enroll_key(key))
        token = credentials.new_agent_token()

        def op(tx: Tx) -> Enrollment:
            row = tx.one(
                "SELECT id, tags, expires_at, uses_left FROM enroll_keys WHERE key_hash = ? AND revoked_at IS NULL",
                (key_hash,),
            )
            if row is None:
                raise ProtocolError(ErrorCode.ENROLL_KEY_UNKNOWN, "unknown or revoked enrollment key")
            key_id, key_tags, expires_at, uses_left = row
            if expires_at is not None and expires_at <= now:
                raise ProtocolError(ErrorCode.ENROLL_KEY_EXPIRED, "this enrollment key has expired; ask for a new one")
            if uses_left is not None and uses_left <= 0:
                raise ProtocolError(ErrorCode.ENROLL_KEY_EXHAUSTED, "this enrollment key has been used up")
            if uses_left is not None:
                tx.execute("UPDATE enroll_keys SET uses_left = uses_left - 1 WHERE id = ?", (key_id,))
            existing = tx.one("SELECT id FROM agents WHERE machine_uuid = ? AND machine_uuid != ''", (machine_uuid,))
            if existing:
                agent_id = existing[0]
                tx.execute(
                    "UPDATE agents SET token_hash = ?, hostname = ?, platform = ? WHERE id = ?",
                    (credentials.digest(token), hostname, platform, agent_id),
                )
            else:
                agent_id = credentials.new_agent_id()
                tx.execute(
                    "INSERT INTO agents (id, token_hash, machine_uuid, hostname, platform, enrolled_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (agent_id, credentials.digest(token), machine_uuid, hostname, platform, now),
                )
            all_tags = sorted(set(unpack(key_tags)) | set(tags))
            tx.conn.executemany(
                "INSERT OR IGNORE INTO agent_tags (agent_id, tag) VALUES (?, ?)", [(agent_id, t) for t in all_tags]
            )
            current = [r[0] for r in tx.execute("SELECT tag FROM agent_tags WHERE agent_id = ?", (agent_id,))]
            materialise(tx, agent_id, current, now)
            materialise_selected(tx, agent_id, now)
            return Enrollment(agent_id=agent_id, token=token, tags=current)

        result: Enrollment = await self._submit(op)
        return result

    async def authenticate_agent(self, agent_id: str, token: str) -> AgentAuth | None:
        rows = await self._read("SELECT token_hash FROM agents WHERE id = ?", (agent_id,))
        if not rows or not credentials.matches(token, rows[0][0]):
            return None
        tags = [r[0] for r in await self._read("SELECT tag FROM agent_tags WHERE agent_id = ?", (agent_id,))]
        return AgentAuth(agent_id=agent_id, tags=tags)
