"""Selector tasks in the daemon: the connect path checks an agent's hello against them only
while one is active (``Broker.agent_facts``)."""

from __future__ import annotations

import time
from typing import Any

from store_data import enrolled

from tether.daemon.broker import Broker
from tether.daemon.rpc import ConsoleRPC
from tether.daemon.store.sqlite import SQLiteStore


async def _noop(topic: str, data: Any) -> None:
    return None


async def test_an_untasked_selector_task_stops_costing_each_hello_at_once(store: SQLiteStore) -> None:
    a = await enrolled(store, "a", "prod")
    broker = Broker(store, clock=time.time)
    rpc = ConsoleRPC(broker)
    assert not broker.selector_tasks_active()  # none: a hello costs one dict check
    first = await rpc.call("task.create", {"command": "echo", "selector": '"prod" in tags'}, _noop)
    second = await rpc.call("task.create", {"command": "echo", "selector": "plat == linux"}, _noop)
    assert broker.selector_tasks_active()
    await rpc.call("task.cancel", {"task_id": first.task_id}, _noop)
    assert broker.selector_tasks_active()  # the other one still is
    await rpc.call("task.cancel", {"selector": "plat == linux"}, _noop)
    assert not broker.selector_tasks_active()  # not until their ttl (a week): now
    view = await rpc.call("task.get", {"task_id": second.task_id}, _noop)
    assert view.state == "cancelled" and [d.agent_id for d in view.deliveries] == [a]


async def test_selector_tasks_active_at_start_are_known_to_the_connect_path(store: SQLiteStore) -> None:
    await enrolled(store, "a")
    await ConsoleRPC(Broker(store, clock=time.time)).call(
        "task.create", {"command": "echo", "selector": "plat == linux", "ttl": 3600}, _noop)
    restarted = Broker(store, clock=time.time)
    assert not restarted.selector_tasks_active()
    await restarted.load_timers()
    assert restarted.selector_tasks_active()
    later = Broker(store, clock=lambda: time.time() + 7200)  # past the ttl: lapsed without a read
    await later.load_timers()
    assert not later.selector_tasks_active()
