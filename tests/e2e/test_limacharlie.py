"""LimaCharlie's reliable-tasking requests as its clients send them (python-limacharlie's
``task reliable-send | reliable-list | reliable-delete``, the extension requests of its D&R
rules), against a real tetherd and real agents."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from typing import Any

from harness import AgentProc, Tetherd, wait_until


def action(tetherd: Tetherd, obj: dict[str, Any], check: bool = True) -> tuple[int, Any]:
    return tetherd.ctl("action", json.dumps(obj), check=check)


def states(tetherd: Tetherd, task_id: int) -> dict[str, str]:
    return {d["agent_id"]: d["state"] for d in tetherd.show(task_id)["deliveries"]}


def test_reliable_delete_with_sid_and_a_string_task_id_cancels_that_task_for_that_sensor_only(
    tetherd: Tetherd, make_agent: Callable[..., AgentProc]
) -> None:
    a, b = make_agent("a", "web"), make_agent("b", "web")
    _, created = action(tetherd, {"action": "task", "task": "record --n 1", "tag": "web"})
    task_id = created["task_id"]
    # exactly what python-limacharlie's `task reliable-delete --sid A --task-id N` sends
    rc, out = action(tetherd, {"action": "untask", "sid": a.agent_id, "task_id": str(task_id)})
    assert rc == 0 and out["cancelled"] == 1
    assert states(tetherd, task_id) == {a.agent_id: "cancelled", b.agent_id: "queued"}
    a.start()
    b.start()
    assert wait_until(lambda: states(tetherd, task_id)[b.agent_id] == "done", what="b to run the task")
    a.log.wait_for(r"session_open")  # type: ignore[union-attr]
    assert a.runs() == [] and len(b.runs()) == 1
    # a task id as a string works for the other requests that take one
    assert tetherd.ctl("show", str(task_id))[1]["task_id"] == task_id
    rc, err = action(tetherd, {"action": "untask", "sid": a.agent_id, "task_id": "twelve"}, check=False)
    assert rc == 2 and "task_id must be a whole number" in err


def test_a_cancel_for_one_sensor_keeps_a_tag_task_from_reaching_it_later(
    tetherd: Tetherd, make_agent: Callable[..., AgentProc]
) -> None:
    a, b = make_agent("a", "web"), make_agent("b")
    _, created = action(tetherd, {"action": "task", "task": "record", "tag": "web"})
    action(tetherd, {"action": "untask", "sid": b.agent_id, "task_id": created["task_id"]})
    tetherd.ctl("tag", "add", b.agent_id, "web")  # b would now be reached by the tag task
    assert states(tetherd, created["task_id"]) == {a.agent_id: "queued", b.agent_id: "cancelled"}


def test_a_selector_task_reaches_the_agents_it_matches_now_and_those_whose_facts_change_later(
    tetherd: Tetherd, make_agent: Callable[..., AgentProc]
) -> None:
    prod = make_agent("prod", "prod")
    other = make_agent("other", "staging")
    rc, created = action(tetherd, {"action": "task", "task": "record --why selector",
                                   "selector": 'plat == linux and "prod" in tags', "context": "ir-7"})
    assert rc == 0 and created["deliveries"] == 1
    task_id = created["task_id"]
    assert states(tetherd, task_id) == {prod.agent_id: "queued"}
    # facts change before the ttl ends: a tag added, an agent enrolled later
    tetherd.ctl("tag", "add", other.agent_id, "prod")
    late = make_agent("late", "prod")
    assert set(states(tetherd, task_id)) == {prod.agent_id, other.agent_id, late.agent_id}
    view = tetherd.show(task_id)
    assert view["target"] == 'selector:plat == linux and "prod" in tags' and view["investigation_id"] == "ir-7"
    # LimaCharlie's list with a selector: the pending deliveries of the agents it matches now
    rc, rows = action(tetherd, {"action": "list", "selector": "prod in tags"})
    assert rc == 0 and {r["agent_id"] for r in rows} == {prod.agent_id, other.agent_id, late.agent_id}
    assert all(r["investigation_id"] == "ir-7" and r["command_line"] == "record --why selector"
               and r["target"].startswith("selector:") and r["ttl"] == 604800 for r in rows)
    for agent in (prod, other, late):
        agent.start()
    rc, done = tetherd.ctl("wait", str(task_id), "--timeout", "60")
    assert rc == 0 and all(d["investigation_id"] == "ir-7" for d in done["deliveries"])


def test_an_agent_whose_hello_brings_new_facts_gets_a_selector_task(
    tetherd: Tetherd, make_agent: Callable[..., AgentProc]
) -> None:
    a = make_agent("a")
    # As for an agent enrolled by a client that sent no platform: tetherd learns it from the
    # agent's hello. (Written beside the running tetherd, as another process may: WAL.)
    db = sqlite3.connect(tetherd.data_dir / "tether.sqlite", timeout=10)
    with db:
        db.execute("UPDATE agents SET platform = '' WHERE id = ?", (a.agent_id,))
    db.close()
    _, created = action(tetherd, {"action": "task", "task": "record", "plat": "linux"})
    assert created["deliveries"] == 0
    a.start()  # its hello says linux-x86_64 (or another linux)
    rc, view = tetherd.ctl("wait", str(created["task_id"]), "--timeout", "60")
    assert rc == 0 and [d["agent_id"] for d in view["deliveries"]] == [a.agent_id]


def test_untask_by_selector_and_list_show_the_whole_command_line(
    tetherd: Tetherd, make_agent: Callable[..., AgentProc]
) -> None:
    a = make_agent("a", "web")
    _, created = action(tetherd, {"action": "task", "task": "file_get --path '/etc/my hosts' --force",
                                  "sid": a.agent_id, "ttl": 3600, "inv_id": "case-1"})
    rc, rows = action(tetherd, {"action": "list", "sid": a.agent_id})
    (row,) = rows
    assert row["command_line"] == "file_get --path '/etc/my hosts' --force"
    assert (row["target"], row["ttl"], row["investigation_id"]) == (f"agent:{a.agent_id}", 3600, "case-1")
    assert row["expires_at"] - row["created_at"] == 3600
    text = tetherd.ctl("tasks", "--agent", a.agent_id)[1]  # the table: --json is added by ctl, so ask raw
    assert "file_get" in json.dumps(text)
    rc, out = action(tetherd, {"action": "untask", "selector": '"web" in tags'})
    assert rc == 0 and out["cancelled"] == 1
    assert states(tetherd, created["task_id"]) == {a.agent_id: "cancelled"}
