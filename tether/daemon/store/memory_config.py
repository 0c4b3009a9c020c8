"""Agents' configuration in the in-memory store (as :mod:`.sqlite_config` keeps it)."""

from __future__ import annotations

import json
from typing import Any

from ...protocol.agent_config import MAX_KEYS, ConfigError
from ...protocol.console import AgentConfigView, ConfigLayerView, DriftRow
from ..effects import Effects
from . import ConfigTarget, views
from .memory_tables import AgentRecord, MemoryTables


class MemoryConfig(MemoryTables):
    def _agent_config(self, agent: AgentRecord) -> views.AgentConfig:
        shared = {name: layer for (scope, name), layer in self._config_layers.items() if scope == "tag"}
        body = None if agent.config_hash is None else self._config_blobs[agent.config_hash]
        return views.AgentConfig(shared, sorted(agent.tags), self._config_layers.get(("agent", agent.id), {}),
                                 None if body is None else json.loads(body), agent.config_at, agent.config_error)

    async def config_set(self, target: ConfigTarget, settings: dict[str, Any], unset: list[str],
                         now: float) -> Effects[ConfigLayerView]:
        def op() -> Effects[ConfigLayerView]:
            if target.scope == "agent":
                self._live(target.name)
            key = (target.scope, target.name)
            layer = {**self._config_layers.get(key, {}), **settings}
            for name in unset:
                layer.pop(name, None)
            if len(layer) > MAX_KEYS:
                raise ConfigError(f"{target.scope} {target.name} would set {len(layer)} keys; at most {MAX_KEYS}")
            if layer:
                self._config_layers[key] = layer
            else:
                self._config_layers.pop(key, None)
            reached = sorted((a for a in self._agents.values() if a.live and (
                a.id == target.name if target.scope == "agent" else target.name in a.tags)), key=lambda a: a.id)
            return Effects(views.layer_view(target.scope, target.name, layer, len(reached)),
                           configures=[views.configure(a.id, self._agent_config(a).desired()) for a in reached])

        return self._write(op)

    async def agent_config(self, agent_id: str) -> AgentConfigView | None:
        agent = self._agents.get(agent_id)
        return None if agent is None else self._agent_config(agent).view(agent_id)

    async def config_drift(self) -> list[DriftRow]:
        rows = []
        for agent in self._agents.values():
            if agent.live:
                config = self._agent_config(agent)
                rows.append(views.drift_row(agent.id, agent.hostname, config.desired(), config.reported_hash,
                                            config.reported_at, config.error))
        return sorted((r for r in rows if r is not None), key=lambda r: (r.hostname, r.agent_id))
