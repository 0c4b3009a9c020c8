"""Agents' configuration in the store (``store/sqlite_config.py``, ``memory_config.py``):
layers, content-addressed reported configurations, drift (issue 19.7). Every backend."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest
from store_data import NOW, enrolled

from tether.daemon.store import ConfigTarget, Store
from tether.daemon.store.memory import MemoryStore
from tether.daemon.store.sqlite import SQLiteStore
from tether.protocol import ErrorCode, ProtocolError
from tether.protocol.agent_config import EMPTY_HASH, config_hash
from tether.protocol.agent_state import AgentState

STATE = AgentState(hostname="h")


def blobs(store: Store) -> int:
    """Configurations stored (the contract says nothing of how: each backend is asked its way)."""
    if isinstance(store, SQLiteStore):
        assert store.path is not None
        with sqlite3.connect(store.path) as conn:
            return int(conn.execute("SELECT count(*) FROM config_blobs").fetchone()[0])
    assert isinstance(store, MemoryStore)
    return len(store._config_blobs)


async def test_a_thousand_agents_reporting_the_same_configuration_store_one_copy(store: Store) -> None:
    await store.bootstrap(NOW)
    key = (await store.create_key(["fleet"], None, None, NOW)).result.key
    assert key is not None
    agents = [e.result.agent_id for e in await asyncio.gather(
        *(store.enroll(key, f"m{i}", f"h{i}", "linux", [], NOW) for i in range(1000)))]
    same = {"state_interval": 60.0, "app.mode": "strict"}
    await asyncio.gather(*(store.record_state(a, STATE, NOW, dict(same)) for a in agents))
    assert blobs(store) == 1
    await store.record_state(agents[0], STATE, NOW + 1, {"app.mode": "lax"})
    assert blobs(store) == 2
    view = await store.agent_config(agents[1])
    assert view is not None and view.reported_hash == config_hash(same) and view.reported is not None
    assert view.reported["app.mode"] == "strict" and view.reported["log_level"] == "info"


async def test_layers_and_drift(store: Store) -> None:
    web = await enrolled(store, "web-1", "web")
    other = await enrolled(store, "db-1", "db")
    recorded = (await store.record_state(web, STATE, NOW, {})).result
    assert not recorded.drifted and recorded.desired_hash == recorded.reported_hash == EMPTY_HASH
    assert await store.config_drift() == []  # db-1 never reported, but it should run the defaults anyway
    layer = await store.config_set(ConfigTarget("tag", "web"), {"state_interval": 60.0, "app.mode": "web"}, [], NOW)
    assert (layer.result.scope, layer.result.name, layer.result.agents) == ("tag", "web", 1)
    assert layer.result.settings == {"app.mode": "web", "state_interval": 60.0}
    [(agent, frame)] = layer.configures
    assert agent == web and frame.settings == {"app.mode": "web", "state_interval": 60.0}
    assert frame.hash == config_hash(frame.settings)
    await store.config_set(ConfigTarget("agent", web), {"app.mode": "mine"}, [], NOW)
    view = await store.agent_config(web)
    assert view is not None and view.drift and view.reported_hash == EMPTY_HASH
    assert view.desired == {"state_interval": 60.0, "log_level": "info", "app.mode": "mine"}
    assert view.origins == {"state_interval": "tag:web", "log_level": "default", "app.mode": "agent"}
    [row] = await store.config_drift()
    assert (row.agent_id, row.reported_hash, row.desired_hash) == (web, EMPTY_HASH, view.desired_hash)
    recorded = (await store.record_state(web, STATE, NOW + 1, {"state_interval": 60.0, "app.mode": "mine"})).result
    assert not recorded.drifted and await store.config_drift() == []
    # Unset: the tag's value applies again, and the agent is drifted until it reports it.
    unset = await store.config_set(ConfigTarget("agent", web), {}, ["app.mode"], NOW + 2)
    assert unset.result.settings == {} and unset.configures[0][1].settings["app.mode"] == "web"
    assert [r.agent_id for r in await store.config_drift()] == [web]
    other_view = await store.agent_config(other)
    assert other_view is not None and other_view.reported is None and other_view.drift


async def test_refused_input_stores_nothing(store: Store) -> None:
    web = await enrolled(store, "web-1", "web")
    with pytest.raises(ProtocolError) as refused:
        await store.config_set(ConfigTarget("agent", "no-such-agent"), {"app.mode": "x"}, [], NOW)
    assert refused.value.code is ErrorCode.UNKNOWN_AGENT
    await store.config_set(ConfigTarget("tag", "web"), {f"app.k{i}": i for i in range(60)}, [], NOW)
    with pytest.raises(ProtocolError) as refused:
        await store.config_set(ConfigTarget("tag", "web"), {f"app.n{i}": i for i in range(5)}, [], NOW)
    assert refused.value.code is ErrorCode.INVALID_CONFIG and "would set 65 keys; at most 64" in refused.value.message
    view = await store.agent_config(web)
    assert view is not None and len(view.desired) == 62 and "app.n0" not in view.desired
    assert await store.agent_config("no-such-agent") is None
