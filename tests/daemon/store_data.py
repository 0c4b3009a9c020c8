"""What the store tests put in a store: a fixed clock, enrolled agents, tasks, results."""

from __future__ import annotations

from tether.daemon.store import NewTask, ResultIn
from tether.daemon.store.sqlite import SQLiteStore
from tether.protocol import pack
from tether.protocol.lifecycle import WaitPlan

NOW = 1_800_000_000.0


async def enrolled(store: SQLiteStore, name: str, *tags: str) -> str:
    """A new agent ``name`` carrying ``tags`` (enrolled with a key that gives them)."""
    await store.bootstrap(NOW)
    key = await store.create_enroll_key(list(tags), None, None, NOW)
    return (await store.enroll(key, f"uuid-{name}", name, "linux", list(tags), NOW)).agent_id


def task(kind: str = "agent", target: str = "", ttl: int = 60, priority: int = 1,
         hide_polling_output: bool = False) -> NewTask:
    return NewTask(command="echo", args={"x": 1}, target_kind=kind, target=target, priority=priority, ttl=ttl,
                   hide_polling_output=hide_polling_output)


def result(delivery_id: int, output: object, *, run: int = 1, ok: bool = True, plan: WaitPlan | None = None,
           finished_at: float = NOW + 1) -> ResultIn:
    return ResultIn(delivery_id=delivery_id, ok=ok, output=pack(output), started_at=NOW, finished_at=finished_at,
                    run=run, plan=plan)
