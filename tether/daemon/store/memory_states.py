"""What agents report about themselves, in the in-memory store: their latest state and the
history of its changes (as :mod:`.sqlite_states` keeps them)."""

from __future__ import annotations

import asyncio
from typing import Any

from ...protocol.agent_config import config_hash
from ...protocol.agent_state import AgentState
from ...protocol.codec import pack
from ...protocol.console import AgentDetail
from ..effects import Effects
from . import MAX_STATE_CHANGES, StateRecorded, views
from .memory_config import MemoryConfig


class MemoryStates(MemoryConfig):
    def record_state(self, agent_id: str, state: AgentState, now: float, config: dict[str, Any] | None = None,
                     config_error: str = "") -> asyncio.Future[Effects[StateRecorded]]:
        blob = pack(state)
        reported = None if config is None else views.blob(config)

        def op() -> Effects[StateRecorded]:
            old = self._states.get(agent_id)
            found = views.state_changes(None if old is None else old[0], state)
            self._states[agent_id] = (blob, now)
            if found:
                history = self._state_history[agent_id]
                history += [(now, name, pack(before), pack(after)) for name, before, after in found]
                del history[:-MAX_STATE_CHANGES]
            changed = [name for name, _, _ in found]
            agent = self._agents.get(agent_id)
            if agent is None:
                return Effects(StateRecorded(changed=changed))
            agent.hostname = state.hostname or agent.hostname
            agent.platform = state.platform or agent.platform
            agent.last_seen = now
            if reported is None:
                return Effects(StateRecorded(changed=changed))
            self._config_blobs.setdefault(*reported)
            agent.config_hash, agent.config_at, agent.config_error = reported[0], now, config_error
            wanted = self._agent_config(agent).desired()
            return Effects(StateRecorded(changed=changed, desired=wanted, desired_hash=config_hash(wanted),
                                         reported_hash=reported[0]))

        return self._future(op)

    async def get_agent(self, agent_id: str, *, changes: int = 20) -> AgentDetail | None:
        agent = self._agents.get(agent_id)
        if agent is None:
            return None
        history = self._state_history.get(agent_id, [])
        newest = history[::-1][:changes]
        return views.agent_detail(agent.view(), self._states.get(agent_id), newest)
