"""Agents' state reports in the store (``store/sqlite_states.py``, ``memory_states.py``):
the latest kept, a history of changes only (issue 19.3). Run against every backend."""

from __future__ import annotations

import msgspec
from store_data import NOW, enrolled

from tether.daemon.store import MAX_STATE_CHANGES, Store
from tether.protocol.agent_state import AgentState, Disk

BASE = AgentState(agent_version="1.0", os="Debian GNU/Linux", os_version="12", platform="linux-x86_64",
                  hostname="web-1", boot_time=NOW - 3600, uptime=3600, disks=[Disk(mount="/", total=100, used=40)],
                  memory_total=8 << 30, memory_used=1 << 30, commands=["echo", "os_version"])


async def test_a_changed_field_writes_one_history_row_and_an_unchanged_report_none(store: Store) -> None:
    agent = await enrolled(store, "web-1")
    assert (await store.record_state(agent, BASE, NOW)).result.changed == []  # the first report is the baseline
    # Gauges moved (uptime, disk and memory use): no change.
    moved = msgspec.structs.replace(BASE, uptime=7200, memory_used=2 << 30, disks=[Disk(mount="/", total=100, used=90)])
    assert (await store.record_state(agent, moved, NOW + 10)).result.changed == []
    detail = await store.get_agent(agent)
    assert detail is not None and detail.changes == [] and detail.state == moved and detail.state_at == NOW + 10
    upgraded = msgspec.structs.replace(moved, agent_version="1.1")
    assert (await store.record_state(agent, upgraded, NOW + 20)).result.changed == ["agent_version"]
    detail = await store.get_agent(agent)
    assert detail is not None
    assert [(c.at, c.fact, c.old, c.new) for c in detail.changes] == [(NOW + 20, "agent_version", "1.0", "1.1")]
    # The same report again writes nothing more.
    assert (await store.record_state(agent, upgraded, NOW + 30)).result.changed == []
    detail = await store.get_agent(agent)
    assert detail is not None and len(detail.changes) == 1


async def test_each_changed_fact_is_a_row_newest_first(store: Store) -> None:
    agent = await enrolled(store, "web-1")
    await store.record_state(agent, BASE, NOW)
    grown = msgspec.structs.replace(BASE, hostname="web-2", disks=[Disk(mount="/", total=200, used=40)],
                                    commands=["echo"])
    assert (await store.record_state(agent, grown, NOW + 1)).result.changed == ["hostname", "disks", "commands"]
    detail = await store.get_agent(agent, changes=2)
    assert detail is not None
    assert [(c.fact, c.old, c.new) for c in detail.changes] == [
        ("commands", ["echo", "os_version"], ["echo"]), ("disks", {"/": 100}, {"/": 200})]
    # The reported hostname is the agent's (what selectors evaluate).
    assert detail.agent.hostname == "web-2" and detail.agent.last_seen == NOW + 1
    assert [a.hostname for a in await store.list_agents(None)] == ["web-2"]


async def test_an_agent_changing_on_every_report_keeps_only_its_newest_changes(store: Store) -> None:
    agent = await enrolled(store, "flappy")
    await store.record_state(agent, BASE, NOW)
    for i in range(MAX_STATE_CHANGES + 5):
        await store.record_state(agent, msgspec.structs.replace(BASE, hostname=f"h{i}"), NOW + i + 1)
    detail = await store.get_agent(agent, changes=MAX_STATE_CHANGES)
    assert detail is not None and len(detail.changes) == MAX_STATE_CHANGES
    assert detail.changes[0].new == f"h{MAX_STATE_CHANGES + 4}" and detail.changes[-1].old == "h4"


async def test_an_agent_never_reporting_shows_no_state_and_an_unknown_one_nothing(store: Store) -> None:
    agent = await enrolled(store, "quiet")
    detail = await store.get_agent(agent)
    assert detail is not None and (detail.state, detail.state_at, detail.changes) == (None, None, [])
    assert detail.agent.agent_id == agent and detail.agent.hostname == "quiet"
    assert await store.get_agent("no-such-agent") is None
