"""Agents' configuration in the SQLite store: the layers operators set, each distinct
reported configuration once (content-addressed), and what each agent reported.

Only what an operator set is stored (``config_layers``: one row per tag or agent and key);
an agent's desired configuration is made from the layers when it is needed
(:func:`tether.protocol.agent_config.desired`). What agents report is stored by its
SHA-256 (``config_blobs``): a thousand agents reporting the same configuration share one
row, and each agent row names the hash it reported.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from ...protocol.agent_config import MAX_KEYS, ConfigError
from ...protocol.codec import pack, unpack
from ...protocol.console import AgentConfigView, ConfigLayerView, DriftRow
from ..effects import Effects
from . import ConfigTarget, views
from .sqlite_tasks import LIVE, check_agent
from .writer import Tx

_AGENT_TAGS = "SELECT agent_id, tag FROM agent_tags WHERE agent_id IN ({agents})"
_AGENT_LAYERS = "SELECT name, key, value FROM config_layers WHERE scope = 'agent' AND name IN ({agents})"
_TAG_LAYERS = "SELECT name, key, value FROM config_layers WHERE scope = 'tag'"
_REPORTED = ("SELECT a.id, a.hostname, a.config_hash, a.config_at, a.config_error, b.body FROM agents a"
             " LEFT JOIN config_blobs b ON b.hash = a.config_hash WHERE a.id IN ({agents})")
"""Each reading names its agents with ``{agents}``: one ``?``, or a subquery."""


def _layers(rows: Iterable[tuple[str, str, bytes]]) -> views.Layers:
    found: views.Layers = defaultdict(dict)
    for name, key, value in rows:
        found[name][key] = unpack(value)
    return found


def _configs(tags: Iterable[tuple[str, str]], agent_layers: Iterable[tuple[str, str, bytes]],
             tag_layers: Iterable[tuple[str, str, bytes]],
             reported: Iterable[tuple[Any, ...]]) -> dict[str, tuple[str, views.AgentConfig]]:
    """Each agent's hostname and configuration, from the rows of the readings above."""
    by_agent: dict[str, list[str]] = defaultdict(list)
    for agent_id, tag in tags:
        by_agent[agent_id].append(tag)
    own, shared = _layers(agent_layers), _layers(tag_layers)
    return {r[0]: (r[1], views.AgentConfig(shared, by_agent[r[0]], own[r[0]],
                                            None if r[5] is None else json.loads(r[5]), r[3], r[4]))
            for r in reported}


def configs_in(tx: Tx, agents: str, params: tuple[Any, ...]) -> dict[str, tuple[str, views.AgentConfig]]:
    """In a write: the configuration of the agents ``agents`` names (``?`` or a subquery)."""
    return _configs(tx.execute(_AGENT_TAGS.format(agents=agents), params),
                    tx.execute(_AGENT_LAYERS.format(agents=agents), params), tx.execute(_TAG_LAYERS),
                    tx.execute(_REPORTED.format(agents=agents), params))


class SQLiteConfig:
    """Mixed into :class:`~.sqlite.SQLiteStore`, which provides ``_submit`` and ``_read``."""

    _submit: Callable[..., Any]
    _read: Callable[..., Awaitable[list[Any]]]

    async def config_set(self, target: ConfigTarget, settings: dict[str, Any], unset: list[str],
                         now: float) -> Effects[ConfigLayerView]:
        def op(tx: Tx) -> Effects[ConfigLayerView]:
            if target.scope == "agent":
                check_agent(tx, target.name)
            tx.conn.executemany("INSERT INTO config_layers (scope, name, key, value) VALUES (?, ?, ?, ?)"
                                " ON CONFLICT (scope, name, key) DO UPDATE SET value = excluded.value",
                                [(target.scope, target.name, k, pack(v)) for k, v in settings.items()])
            tx.conn.executemany("DELETE FROM config_layers WHERE scope = ? AND name = ? AND key = ?",
                                [(target.scope, target.name, k) for k in unset])
            layer = _layers(tx.execute("SELECT name, key, value FROM config_layers WHERE scope = ? AND name = ?",
                                       (target.scope, target.name)))[target.name]
            if len(layer) > MAX_KEYS:  # raised before the commit: nothing of it is stored
                raise ConfigError(f"{target.scope} {target.name} would set {len(layer)} keys; at most {MAX_KEYS}")
            if target.scope == "agent":
                reached = configs_in(tx, "?", (target.name,))
            else:
                reached = configs_in(tx, f"SELECT t.agent_id FROM agent_tags t JOIN agents a ON a.id = t.agent_id"
                                         f" WHERE t.tag = ? AND {LIVE}", (target.name,))
            return Effects(views.layer_view(target.scope, target.name, layer, len(reached)),
                           configures=[views.configure(a, c.desired()) for a, (_, c) in sorted(reached.items())])

        result: Effects[ConfigLayerView] = await self._submit(op)
        return result

    async def _configs(self, agents: str, params: tuple[Any, ...]) -> dict[str, tuple[str, views.AgentConfig]]:
        return _configs(await self._read(_AGENT_TAGS.format(agents=agents), params),
                        await self._read(_AGENT_LAYERS.format(agents=agents), params), await self._read(_TAG_LAYERS),
                        await self._read(_REPORTED.format(agents=agents), params))

    async def agent_config(self, agent_id: str) -> AgentConfigView | None:
        found = await self._configs("?", (agent_id,))
        return found[agent_id][1].view(agent_id) if agent_id in found else None

    async def config_drift(self) -> list[DriftRow]:
        found = await self._configs(f"SELECT id FROM agents WHERE {LIVE}", ())
        rows = [views.drift_row(a, host, c.desired(), c.reported_hash, c.reported_at, c.error)
                for a, (host, c) in found.items()]
        return sorted((r for r in rows if r is not None), key=lambda r: (r.hostname, r.agent_id))
