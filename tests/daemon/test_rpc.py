"""The console RPC (``daemon/rpc.py``): what a method answers, and `task.wait` seeing a change that commits while it reads."""

from __future__ import annotations

import asyncio
from typing import Any

from tether.daemon.clock import SystemClock
from tether.daemon.effects import Change, Effects
from tether.daemon.operations import Operations
from tether.daemon.rpc import ConsoleRPC
from tether.protocol.console import DeliveryView, TaskView


class _SnapshotStore:
    """get_task's snapshot is taken, then the change commits and is notified, then it returns."""

    def __init__(self) -> None:
        self.state = "running"
        self.gate: asyncio.Future[None] | None = None
        self.reading = asyncio.Event()

    async def get_task(self, task_id: int, history: bool = False, now: float | None = None) -> TaskView:
        snapshot = self.state
        self.reading.set()
        if self.gate is not None:
            await self.gate
            self.gate = None
        return TaskView(task_id=1, command="c", args={}, target="all", priority=1, ttl=60, created_at=0.0,
                        expires_at=60.0, state="active",
                        deliveries=[DeliveryView(delivery_id=1, agent_id="a", state=snapshot, updated_at=0.0)])


async def test_wait_sees_a_change_that_commits_while_it_reads() -> None:
    store = _SnapshotStore()
    operations = Operations(store, SystemClock())  # type: ignore[arg-type]
    rpc = ConsoleRPC(operations)
    emitted: list[Any] = []

    async def emit(topic: str, data: Any) -> None:
        emitted.append(data)

    first_read = asyncio.get_running_loop().create_future()
    store.gate = first_read
    waiter = asyncio.create_task(rpc.call("task.wait", {"task_id": 1, "timeout": 30}, emit))
    await asyncio.wait_for(store.reading.wait(), 5)  # the wait has registered and is reading
    store.state = "done"
    operations.apply(Effects(None, changes=[Change(1, 1, "a", "running", "done")]))
    first_read.set_result(None)  # the read returns its stale snapshot
    view = await asyncio.wait_for(waiter, 5)  # before the fix: only at the 30 s timeout
    assert view.deliveries[0].state == "done" and len(emitted) == 1


