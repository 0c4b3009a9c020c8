"""Selector tasks in the daemon: the connect path checks an agent's hello against them only
while one is active (``Operations.hello``)."""

from __future__ import annotations

import time
from typing import Any

from store_data import enrolled

from tether.daemon.clock import FakeClock, SystemClock
from tether.daemon.operations import Operations
from tether.daemon.rpc import ConsoleRPC
from tether.daemon.store.sqlite import SQLiteStore


async def _noop(topic: str, data: Any) -> None:
    return None


async def test_an_untasked_selector_task_stops_costing_each_hello_at_once(store: SQLiteStore) -> None:
    a = await enrolled(store, "a", "prod")
    operations = Operations(store, SystemClock())
    rpc = ConsoleRPC(operations)
    assert not operations.selectors.active()  # none: a hello costs one dict check
    first = await rpc.call("task.create", {"command": "echo", "selector": '"prod" in tags'}, _noop)
    second = await rpc.call("task.create", {"command": "echo", "selector": "plat == linux"}, _noop)
    assert operations.selectors.active()
    await rpc.call("task.cancel", {"task_id": first.task_id}, _noop)
    assert operations.selectors.active()  # the other one still is
    await rpc.call("task.cancel", {"selector": "plat == linux"}, _noop)
    assert not operations.selectors.active()  # not until their ttl (a week): now
    view = await rpc.call("task.get", {"task_id": second.task_id}, _noop)
    assert view.state == "cancelled" and [d.agent_id for d in view.deliveries] == [a]


async def test_selector_tasks_active_at_start_are_known_to_the_connect_path(store: SQLiteStore) -> None:
    await enrolled(store, "a")
    await ConsoleRPC(Operations(store, SystemClock())).call(
        "task.create", {"command": "echo", "selector": "plat == linux", "ttl": 3600}, _noop)
    restarted = Operations(store, SystemClock())
    assert not restarted.selectors.active()
    await restarted.load()
    assert restarted.selectors.active()
    later = Operations(store, FakeClock(time.time() + 7200))  # past the ttl: lapsed without a read
    await later.load()
    assert not later.selectors.active()
