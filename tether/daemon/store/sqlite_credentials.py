"""Credentials in the SQLite store: admin tokens and enrollment keys (agents' tokens:
``sqlite_agents.py``).

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
from ..effects import Effects
from .rules import MAX_ID
from .writer import Op, Tx


class SQLiteCredentials:
    """Mixed into :class:`~.sqlite.SQLiteStore`, which provides ``_submit`` and ``_read``."""

    _submit: Callable[[Op], asyncio.Future[Any]]
    _read: Callable[..., Awaitable[list[Any]]]

    async def bootstrap(self, now: float, *, key_uses: int | None = None,
                        key_expires_at: float | None = None) -> Effects[tuple[str, str] | None]:
        def op(tx: Tx) -> Effects[tuple[str, str] | None]:
            if tx.one("SELECT 1 FROM admin_tokens LIMIT 1"):
                return Effects(None)
            token = credentials.new_admin_token()
            key = credentials.new_enroll_key()
            tx.execute(
                "INSERT INTO admin_tokens (token_hash, role, label, created_at) VALUES (?, 'admin', 'initial', ?)",
                (credentials.digest(token), now),
            )
            tx.execute(
                "INSERT INTO enroll_keys (key_hash, tags, created_at, expires_at, uses_left) VALUES (?, ?, ?, ?, ?)",
                (credentials.digest(key), pack([]), now, key_expires_at, key_uses),
            )
            return Effects((token, key))

        result: Effects[tuple[str, str] | None] = await self._submit(op)
        return result

    async def create_token(self, role: str, label: str, now: float) -> Effects[TokenView]:
        token = credentials.new_admin_token()

        def op(tx: Tx) -> int:
            return tx.execute(
                "INSERT INTO admin_tokens (token_hash, role, label, created_at) VALUES (?, ?, ?, ?)",
                (credentials.digest(token), role, label, now),
            ).lastrowid or 0

        token_id: int = await self._submit(op)
        return Effects(TokenView(token_id=token_id, role=role, label=label, created_at=now, revoked_at=None,
                                 token=token))

    async def list_tokens(self) -> list[TokenView]:
        rows = await self._read("SELECT id, role, label, created_at, revoked_at FROM admin_tokens ORDER BY id")
        return [TokenView(token_id=r[0], role=r[1], label=r[2], created_at=r[3], revoked_at=r[4]) for r in rows]

    async def revoke_token(self, token_id: int, now: float) -> Effects[bool]:
        def op(tx: Tx) -> Effects[bool]:
            row = tx.one("SELECT role, revoked_at FROM admin_tokens WHERE id = ?", (min(token_id, MAX_ID),))
            if row is None:
                raise ProtocolError(ErrorCode.UNKNOWN_TOKEN, f"no admin token with id {token_id}")
            if row[1] is not None:
                return Effects(False)
            if row[0] == "admin" and not tx.one(
                "SELECT 1 FROM admin_tokens WHERE role = 'admin' AND revoked_at IS NULL AND id != ?", (token_id,)
            ):
                raise ProtocolError(ErrorCode.LAST_ADMIN_TOKEN,
                                    f"token {token_id} is the last admin token; create another admin token first")
            tx.execute("UPDATE admin_tokens SET revoked_at = ? WHERE id = ?", (now, token_id))
            return Effects(True)

        result: Effects[bool] = await self._submit(op)
        return result

    async def create_key(self, tags: list[str], expires_at: float | None, uses: int | None, now: float,
                         *, allow_requested_tags: bool = False) -> Effects[KeyView]:
        key = credentials.new_enroll_key()
        tags = sorted(set(tags))

        def op(tx: Tx) -> int:
            return tx.execute(
                "INSERT INTO enroll_keys (key_hash, tags, created_at, expires_at, uses_left, allow_requested_tags)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (credentials.digest(key), pack(tags), now, expires_at, uses, int(allow_requested_tags)),
            ).lastrowid or 0

        key_id: int = await self._submit(op)
        return Effects(KeyView(key_id=key_id, tags=tags, created_at=now, expires_at=expires_at, uses_left=uses,
                               revoked_at=None, key=key, allow_requested_tags=allow_requested_tags))

    async def list_keys(self) -> list[KeyView]:
        rows = await self._read(
            "SELECT id, tags, created_at, expires_at, uses_left, revoked_at, allow_requested_tags FROM enroll_keys"
            " ORDER BY id")
        return [KeyView(key_id=r[0], tags=unpack(r[1]), created_at=r[2], expires_at=r[3], uses_left=r[4],
                        revoked_at=r[5], allow_requested_tags=bool(r[6])) for r in rows]

    async def revoke_key(self, key_id: int, now: float) -> Effects[bool]:
        def op(tx: Tx) -> Effects[bool]:
            row = tx.one("SELECT revoked_at FROM enroll_keys WHERE id = ?", (min(key_id, MAX_ID),))
            if row is None:
                raise ProtocolError(ErrorCode.UNKNOWN_KEY, f"no enrollment key with id {key_id}")
            if row[0] is not None:
                return Effects(False)
            tx.execute("UPDATE enroll_keys SET revoked_at = ? WHERE id = ?", (now, key_id))
            return Effects(True)

        result: Effects[bool] = await self._submit(op)
        return result

    async def admin_login(self, token: str) -> tuple[int, str] | None:
        """The id and role of an admin token that is not revoked."""
        rows = await self._read(
            "SELECT id, role FROM admin_tokens WHERE token_hash = ? AND revoked_at IS NULL",
            (credentials.digest(token),),
        )
        return (rows[0][0], rows[0][1]) if rows else None
