"""The store's automation hooks (both backends): names unique and case-sensitive, the outbox
keeps a run until its end is recorded, every run is recorded, a hook's records go with it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tether.daemon.store import Store
from tether.daemon.store.hook_records import HookRecord, OutboxIn, RunRecord
from tether.daemon.store.sqlite import SQLiteStore
from tether.protocol.errors import ErrorCode, ProtocolError


def hook(name: str, **kw: object) -> HookRecord:
    fields: dict[str, object] = {"trigger": "after-task", "action": "web", "target": "https://127.0.0.1:1/",
                                 "timeout": 5.0, "on_timeout": "fail-open", "secret": "s3cret"}
    fields.update(kw)
    return HookRecord(name=name, **fields)  # type: ignore[arg-type]


def run(name: str, outcome: str = "ok", **kw: object) -> RunRecord:
    return RunRecord(hook=name, trigger="after-task", started_at=10.0, duration=0.5, outcome=outcome, **kw)  # type: ignore[arg-type]


async def test_names_are_unique_and_case_sensitive(store: Store) -> None:
    await store.add_hook(hook("A"))
    await store.add_hook(hook("a"))
    with pytest.raises(ProtocolError) as exc:
        await store.add_hook(hook("A"))
    assert exc.value.code == ErrorCode.HOOK_EXISTS
    assert [h.name for h in await store.list_hooks()] == ["A", "a"]
    assert (await store.list_hooks())[0].secret == "s3cret"


async def test_enable_disable_and_unknown(store: Store) -> None:
    await store.add_hook(hook("h"))
    assert (await store.set_hook_enabled("h", False)).result.enabled is False
    assert (await store.list_hooks())[0].enabled is False
    for call in (store.set_hook_enabled("H", True), store.remove_hook("nope")):
        with pytest.raises(ProtocolError) as exc:
            await call
        assert exc.value.code == ErrorCode.UNKNOWN_HOOK


async def test_outbox_keeps_a_run_until_its_end_is_recorded(store: Store) -> None:
    await store.add_hook(hook("h"))
    queued = await store.queue_hook_runs([OutboxIn("h", "after-task", b'{"n":1}'),
                                          OutboxIn("h", "after-task", b'{"n":2}')], 100.0)
    assert queued.result == 2
    assert await store.hook_pending() == {"h": 2}
    due = await store.due_hook_runs(100.0, 10, skip_ids=[], skip_hooks=[])
    assert [r.payload for r in due] == [b'{"n":1}', b'{"n":2}']
    assert await store.due_hook_runs(99.0, 10, skip_ids=[], skip_hooks=[]) == []
    assert await store.due_hook_runs(100.0, 10, skip_ids=[], skip_hooks=["h"]) == []
    assert [r.id for r in await store.due_hook_runs(100.0, 10, skip_ids=[due[0].id], skip_hooks=[])] == [due[1].id]
    # A failed attempt: waits until its retry, counted.
    await store.end_hook_run(due[0].id, run("h", "error", message="down"), retry_at=160.0)
    again = await store.due_hook_runs(200.0, 10, skip_ids=[], skip_hooks=[])
    assert [(r.id, r.attempts) for r in again] == [(due[1].id, 0), (due[0].id, 1)]
    await store.end_hook_run(due[0].id, run("h", attempt=2), retry_at=None)
    assert await store.hook_pending() == {"h": 1}
    runs = await store.hook_runs("h", 10)
    assert [(r.outcome, r.message, r.attempt) for r in runs] == [("ok", "", 2), ("error", "down", 1)]


async def test_a_dedup_key_is_queued_once_while_pending(store: Store) -> None:
    await store.add_hook(hook("h"))
    rows = [OutboxIn("h", "after-task-done", b"{}", dedup="task:1")] * 2
    assert (await store.queue_hook_runs(rows, 1.0)).result == 1
    assert (await store.queue_hook_runs(rows[:1], 1.0)).result == 0


async def test_removing_a_hook_drops_its_runs(store: Store) -> None:
    await store.add_hook(hook("h"))
    await store.add_hook(hook("k"))
    await store.queue_hook_runs([OutboxIn("h", "after-task", b"{}"), OutboxIn("k", "after-task", b"{}")], 1.0)
    await store.record_hook_run(run("h", test=True))
    assert (await store.remove_hook("h")).result == 1
    assert await store.hook_runs("h", 10) == []
    assert await store.hook_pending() == {"k": 1}


async def test_runs_kept_are_bounded(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    from tether.daemon.store import memory_hooks, sqlite_hooks
    monkeypatch.setattr(sqlite_hooks, "RUNS_KEPT", 3)
    monkeypatch.setattr(memory_hooks, "RUNS_KEPT", 3)
    await store.add_hook(hook("h"))
    for i in range(6):
        await store.record_hook_run(run("h", attempt=i))
    assert [r.attempt for r in await store.hook_runs("h", 10)] == [5, 4, 3]


async def test_the_outbox_survives_a_restart(tmp_path: Path) -> None:
    s = SQLiteStore(tmp_path / "t.sqlite")
    await s.open()
    await s.add_hook(hook("h"))
    await s.queue_hook_runs([OutboxIn("h", "after-task", b'{"task":1}')], 1.0)
    await s.close()
    s = SQLiteStore(tmp_path / "t.sqlite")
    await s.open()
    try:
        assert [r.payload for r in await s.due_hook_runs(2.0, 10, skip_ids=[], skip_hooks=[])] == [b'{"task":1}']
        assert (await s.list_hooks())[0].secret == "s3cret"
    finally:
        await s.close()
