"""What agents report about themselves, in the SQLite store: their latest state and the
history of its changes (:mod:`tether.protocol.agent_state`).

A report is one write: the latest state replaced, one history row per tracked fact that
changed (none for an unchanged report), the history trimmed to the agent's newest
:data:`~tether.daemon.store.MAX_STATE_CHANGES` rows.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from ...protocol.agent_config import config_hash
from ...protocol.agent_state import AgentState
from ...protocol.codec import pack
from ...protocol.console import AgentDetail
from ..effects import Effects
from . import MAX_STATE_CHANGES, StateRecorded, views
from .sqlite_config import configs_in
from .sqlite_reads import AGENT_COLUMNS, agent_view
from .writer import Op, Tx


class SQLiteStates:
    """Mixed into :class:`~.sqlite.SQLiteStore`, which provides ``_submit`` and ``_read``."""

    _submit: Callable[[Op], asyncio.Future[Any]]
    _read: Callable[..., Awaitable[list[Any]]]

    def record_state(self, agent_id: str, state: AgentState, now: float, config: dict[str, Any] | None = None,
                     config_error: str = "") -> asyncio.Future[Effects[StateRecorded]]:
        blob = pack(state)
        reported = None if config is None else views.blob(config)

        def op(tx: Tx) -> Effects[StateRecorded]:
            row = tx.one("SELECT state FROM agent_state WHERE agent_id = ?", (agent_id,))
            found = views.state_changes(None if row is None else row[0], state)
            tx.execute("INSERT INTO agent_state (agent_id, reported_at, state) VALUES (?, ?, ?)"
                       " ON CONFLICT (agent_id) DO UPDATE SET reported_at = excluded.reported_at,"
                       " state = excluded.state", (agent_id, now, blob))
            if found:
                tx.conn.executemany(
                    "INSERT INTO agent_state_history (agent_id, at, fact, old, new) VALUES (?, ?, ?, ?, ?)",
                    [(agent_id, now, name, pack(old), pack(new)) for name, old, new in found])
                tx.execute("DELETE FROM agent_state_history WHERE agent_id = ? AND id < (SELECT id FROM"
                           " agent_state_history WHERE agent_id = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
                           (agent_id, agent_id, MAX_STATE_CHANGES - 1))
            tx.execute("UPDATE agents SET hostname = coalesce(nullif(?, ''), hostname),"
                       " platform = coalesce(nullif(?, ''), platform), last_seen = ? WHERE id = ?",
                       (state.hostname, state.platform, now, agent_id))
            changed = [name for name, _, _ in found]
            if reported is None:
                return Effects(StateRecorded(changed=changed))
            tx.execute("INSERT OR IGNORE INTO config_blobs (hash, body) VALUES (?, ?)", reported)
            tx.execute("UPDATE agents SET config_hash = ?, config_at = ?, config_error = ? WHERE id = ?",
                       (reported[0], now, config_error, agent_id))
            wanted = configs_in(tx, "?", (agent_id,))[agent_id][1].desired()
            return Effects(StateRecorded(changed=changed, desired=wanted, desired_hash=config_hash(wanted),
                                         reported_hash=reported[0]))

        return self._submit(op)

    async def get_agent(self, agent_id: str, *, changes: int = 20) -> AgentDetail | None:
        rows = await self._read(f"SELECT {AGENT_COLUMNS} FROM agents a WHERE a.id = ?", (agent_id,))
        if not rows:
            return None
        agent = agent_view(rows[0])
        state = await self._read("SELECT state, reported_at FROM agent_state WHERE agent_id = ?", (agent_id,))
        history = await self._read("SELECT at, fact, old, new FROM agent_state_history WHERE agent_id = ?"
                                   " ORDER BY id DESC LIMIT ?", (agent_id, changes)) if changes else []
        return views.agent_detail(agent, state[0] if state else None, history)
