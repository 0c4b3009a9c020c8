"""Reliable tasking, end to end: real tetherd, real agents, tetherctl as an operator uses it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

from harness import BIN, AgentProc, Tetherd, wait_until

from tether.console import ConsoleClient, RequestRefused
from tether.daemon.session import FIRST_PAGE


def states(view: dict) -> dict[str, str]:
    return {d["agent_id"]: d["state"] for d in view["deliveries"]}


def test_task_for_offline_agent_runs_once_when_it_starts(tetherd: Tetherd, make_agent: Callable[..., AgentProc]) -> None:
    a = make_agent("a")
    task_id = tetherd.task("record --path /etc/hosts --verbose", "--agent", a.agent_id)
    view = tetherd.show(task_id)
    assert states(view) == {a.agent_id: "queued"}
    assert view["args"] == {"path": "/etc/hosts", "verbose": True}

    a.start()
    rc, view = tetherd.ctl("wait", str(task_id), "--timeout", "30")
    assert rc == 0, view
    (delivery,) = view["deliveries"]
    assert delivery["state"] == "done"
    assert delivery["result"] == {"recorded": {"path": "/etc/hosts", "verbose": True}}
    assert delivery["sent_at"] and delivery["acked_at"] and delivery["finished_at"]
    assert [r["task_id"] for r in a.runs()] == [task_id]
    # `tetherctl show` prints the result for a human too
    env = {**tetherd.env, "TETHER_URL": tetherd.url, "TETHER_TOKEN": tetherd.admin_token}
    text = subprocess.run([str(BIN / "tetherctl"), "show", str(task_id)], capture_output=True, text=True,
                          env=env, check=True).stdout
    assert "done" in text and "/etc/hosts" in text


def test_builtin_os_version_reports_real_platform_facts(tetherd: Tetherd, make_agent: Callable[..., AgentProc]) -> None:
    a = make_agent("a", start=True)
    _, out = tetherd.ctl("action", json.dumps({"action": "task", "task": "os_version", "sid": a.agent_id}))
    rc, view = tetherd.ctl("wait", str(out["task_id"]), "--timeout", "30")
    assert rc == 0
    result = view["deliveries"][0]["result"]
    assert result["system"] == os.uname().sysname
    assert result["release"] == os.uname().release
    assert result["hostname"] == os.uname().nodename


def test_tag_task_reaches_tagged_agents_once_including_later_ones(
    tetherd: Tetherd, make_agent: Callable[..., AgentProc]
) -> None:
    online = make_agent("online", "web", start=True)
    offline = make_agent("offline", "web")
    untagged = make_agent("untagged", start=True)
    later = make_agent("later")

    _, listed = tetherd.ctl("agents", "--online")
    assert sorted(a["agent_id"] for a in listed) == sorted([online.agent_id, untagged.agent_id])
    _, listed = tetherd.ctl("agents", "--tag", "web")
    assert sorted(a["agent_id"] for a in listed) == sorted([online.agent_id, offline.agent_id])
    task_id = tetherd.task("record --n 1", "--tag", "web")
    _, out = tetherd.ctl("tag", "add", later.agent_id, "web")
    assert out["new_deliveries"] == 1
    offline.start()
    later.start()
    rc, view = tetherd.ctl("wait", str(task_id), "--timeout", "30")
    assert rc == 0, view
    assert states(view) == {online.agent_id: "done", offline.agent_id: "done", later.agent_id: "done"}
    for agent in (online, offline, later):
        assert [r["task_id"] for r in agent.runs()] == [task_id], agent.name
    # tagging again, or restarting an agent, never delivers it a second time
    tetherd.ctl("tag", "add", later.agent_id, "web")
    later.kill(signal.SIGTERM)
    later.start()
    sync = tetherd.task("record --sync 1", "--agent", later.agent_id)
    assert tetherd.ctl("wait", str(sync), "--timeout", "30")[0] == 0
    assert [r["task_id"] for r in later.runs()] == [task_id, sync]
    assert untagged.runs() == []
    assert untagged.agent_id not in states(tetherd.show(task_id))


def test_a_tag_no_agent_carries_yet_is_a_target_and_the_answer_says_so(
    tetherd: Tetherd, make_agent: Callable[..., AgentProc]
) -> None:
    env = {**tetherd.env, "TETHER_URL": tetherd.url, "TETHER_TOKEN": tetherd.admin_token}
    out = subprocess.run([str(BIN / "tetherctl"), "task", "record --n 1", "--tag", "later"], capture_output=True,
                         text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    task_id = int(out.stdout)
    assert "0 deliveries queued" in out.stderr and "no agent carries tag 'later' yet" in out.stderr
    _, created = tetherd.ctl("task", "record --n 2", "--tag", "later")
    assert created["deliveries"] == 0 and "no agent carries tag 'later' yet" in created["note"]
    a = make_agent("a", start=True)
    assert tetherd.ctl("tag", "add", a.agent_id, "later")[0] == 0
    assert tetherd.ctl("wait", str(task_id), "--timeout", "30")[0] == 0
    _, again = tetherd.ctl("task", "record --n 3", "--tag", "later")
    assert again["deliveries"] == 1 and not again.get("note")


def test_the_answers_read_naturally(tetherd: Tetherd, make_agent: Callable[..., AgentProc]) -> None:
    """A one-agent task reads as its delivery ended; wait says it timed out; untask --tag says
    what it changed (issue 16.9)."""
    env = {**tetherd.env, "TETHER_URL": tetherd.url, "TETHER_TOKEN": tetherd.admin_token}

    def ctl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BIN / "tetherctl"), *args], capture_output=True, text=True, env=env, timeout=60)

    a = make_agent("a", start=True)
    done = tetherd.task("record --n 1", "--agent", a.agent_id)
    assert tetherd.ctl("wait", str(done), "--timeout", "30")[0] == 0
    assert tetherd.show(done)["state"] == "done"
    assert any(line.split() == ["state", "done"] for line in ctl("show", str(done)).stdout.splitlines())

    b = make_agent("b")  # never started: its task cannot finish
    waited = ctl("wait", str(tetherd.task("record --n 2", "--agent", b.agent_id)), "--timeout", "0.5")
    assert waited.returncode == 124
    assert "timed out after 0.5 s: 1 of 1 delivery" in waited.stderr, waited.stderr

    assert tetherd.ctl("tag", "add", b.agent_id, "web")[0] == 0
    tetherd.task("record --n 3", "--tag", "web")  # b's delivery, and the task reaches later agents
    untasked = ctl("untask", "--tag", "web")
    assert untasked.returncode == 0
    assert untasked.stdout.strip() == ("cancelled 2 deliveries of agents tagged 'web' and of tasks aimed at it; "
                                       "closed 1 task aimed at tag 'web' (it reaches no new agent)")


def test_ttl_expires_undelivered_task_and_it_never_runs(tetherd: Tetherd, make_agent: Callable[..., AgentProc]) -> None:
    a = make_agent("a")
    task_id = tetherd.task("record", "--agent", a.agent_id, "--ttl", "2")
    rc, view = tetherd.ctl("wait", str(task_id), "--timeout", "20", check=False)
    assert rc == 1  # ended, but not done
    assert states(view) == {a.agent_id: "expired"}
    a.start()
    sync = tetherd.task("record --after 1", "--agent", a.agent_id)
    assert tetherd.ctl("wait", str(sync), "--timeout", "30")[0] == 0
    assert [r["task_id"] for r in a.runs()] == [sync]


def test_untask_before_the_agent_connects(tetherd: Tetherd, make_agent: Callable[..., AgentProc]) -> None:
    a = make_agent("a", "db")
    first = tetherd.task("record", "--agent", a.agent_id)
    second = tetherd.task("record --two 2", "--tag", "db")
    third = tetherd.task("record --three 3", "--agent", a.agent_id)
    assert tetherd.ctl("untask", str(first))[1]["cancelled"] == 1
    assert tetherd.ctl("untask", "--tag", "db")[1]["cancelled"] == 2  # second and third: pending on a db agent
    _, pending = tetherd.ctl("tasks", "--agent", a.agent_id)
    assert pending == []
    _, everything = tetherd.ctl("tasks", "--agent", a.agent_id, "--state", "all")
    assert {row["task_id"]: row["state"] for row in everything} == {
        first: "cancelled", second: "cancelled", third: "cancelled"}
    a.start()
    sync = tetherd.task("record --sync 1", "--agent", a.agent_id)
    assert tetherd.ctl("wait", str(sync), "--timeout", "30")[0] == 0
    assert [r["task_id"] for r in a.runs()] == [sync]
    assert tetherd.ctl("wait", str(first), "--timeout", "5", check=False)[0] == 1


def test_untask_of_a_running_delivery_sends_cancel(
    tetherd: Tetherd, make_agent: Callable[..., AgentProc], tmp_path: Path
) -> None:
    a = make_agent("a", start=True)
    fifo = tmp_path / "gate"
    os.mkfifo(fifo)
    task_id = tetherd.task(f"gate --fifo {fifo}", "--agent", a.agent_id)
    writer = open(fifo, "w")  # returns once the command opened the FIFO: it is running
    assert tetherd.ctl("untask", str(task_id))[1]["cancelled"] == 1
    assert a.log is not None
    a.log.wait_for(r"cancel")
    writer.write("late\n")
    writer.close()
    sync = tetherd.task("record --sync 1", "--agent", a.agent_id)
    assert tetherd.ctl("wait", str(sync), "--timeout", "30")[0] == 0
    assert states(tetherd.show(task_id)) == {a.agent_id: "cancelled"}


def test_priority_order_on_connect(tetherd: Tetherd, make_agent: Callable[..., AgentProc]) -> None:
    a = make_agent("a")
    ids = {}
    for prio in ("low", "medium", "urgent", "high", "urgent"):
        ids.setdefault(prio, []).append(tetherd.task(f"record --p {prio}", "--agent", a.agent_id, "--priority", prio))
    a.start("--concurrency", "1")
    for task_ids in ids.values():
        for task_id in task_ids:
            assert tetherd.ctl("wait", str(task_id), "--timeout", "30")[0] == 0
    order = [r["args"]["p"] for r in a.runs()]
    assert order == ["urgent", "urgent", "high", "medium", "low"]


def test_a_queue_longer_than_the_first_page_is_pushed_whole_in_priority_order(
    tetherd: Tetherd, make_agent: Callable[..., AgentProc]
) -> None:
    """tetherd reads the first FIRST_PAGE of a session's queue, starts pushing, then reads
    the rest: every delivery still runs once, highest priority first."""
    a = make_agent("a")
    plan = [(0, 200), (1, FIRST_PAGE - 200), (3, 150)]  # low is oldest, urgent newest

    async def queue() -> None:
        async with ConsoleClient(tetherd.url, tetherd.admin_token) as console:
            for prio, n in plan:
                for start in range(0, n, 50):
                    await asyncio.gather(*(console.call("task.create", {
                        "command": "note", "args": {"p": prio}, "agent": a.agent_id, "priority": prio})
                        for _ in range(min(50, n - start))))

    asyncio.run(queue())
    total = sum(n for _, n in plan)
    a.start("--concurrency", "1")
    runs = wait_until(lambda: len(a.runs()) >= total and a.runs(), timeout=120, what=f"{total} runs")
    assert len(runs) == total and len({r["delivery_id"] for r in runs}) == total
    order = [r["args"]["p"] for r in runs]
    assert order == [3] * 150 + [1] * (FIRST_PAGE - 200) + [0] * 200


def test_failing_command_is_reported_failed(tetherd: Tetherd, make_agent: Callable[..., AgentProc]) -> None:
    a = make_agent("a", start=True)
    task_id = tetherd.task("fail --message disk-on-fire", "--agent", a.agent_id)
    rc, view = tetherd.ctl("wait", str(task_id), "--timeout", "30", check=False)
    assert rc == 1
    (d,) = view["deliveries"]
    assert d["state"] == "failed"
    assert "disk-on-fire" in d["error"]


def test_sigkill_tetherd_right_after_task_returned(tetherd: Tetherd, make_agent: Callable[..., AgentProc]) -> None:
    a = make_agent("a")
    task_id = tetherd.task("record --durable yes", "--agent", a.agent_id)
    tetherd.kill(signal.SIGKILL)
    tetherd.start()
    a.start()
    rc, view = tetherd.ctl("wait", str(task_id), "--timeout", "30")
    assert rc == 0, view
    assert [r["task_id"] for r in a.runs()] == [task_id]


def test_sigkill_agent_with_unconfirmed_result_runs_once(
    tetherd: Tetherd, make_agent: Callable[..., AgentProc], tmp_path: Path
) -> None:
    a = make_agent("a", start=True)
    fifo = tmp_path / "gate"
    os.mkfifo(fifo)
    task_id = tetherd.task(f"gate --fifo {fifo}", "--agent", a.agent_id)
    with open(fifo, "w") as writer:  # blocks until the command is running
        tetherd.kill(signal.SIGKILL)  # nobody can confirm the result now
        writer.write("go\n")
    wait_until(lambda: a.status()["outbox"] == 1, what="the result in the agent's outbox")
    assert len(a.runs()) == 1
    a.kill(signal.SIGKILL)

    tetherd.start()
    a.start()
    rc, view = tetherd.ctl("wait", str(task_id), "--timeout", "30")
    assert rc == 0, view
    assert view["deliveries"][0]["result"] == {"gate": "go"}
    wait_until(lambda: a.status()["outbox"] == 0, what="the outbox to empty after the daemon confirmed")
    assert [r["task_id"] for r in a.runs()] == [task_id]  # ran once, not again after the restart


def test_sigterm_drains_and_agents_reconnect(tetherd: Tetherd, make_agent: Callable[..., AgentProc]) -> None:
    a = make_agent("a", start=True)
    assert tetherd.kill(signal.SIGTERM) == 0
    assert tetherd.log is not None
    tetherd.log.wait_for(r"event=stopped")
    assert a.proc is not None and a.proc.poll() is None  # the agent keeps trying
    tetherd.start()
    task_id = tetherd.task("record --back 1", "--agent", a.agent_id)
    assert tetherd.ctl("wait", str(task_id), "--timeout", "30")[0] == 0


async def test_many_tasks_queued_offline_all_run_once(tetherd: Tetherd, make_agent: Callable[..., AgentProc]) -> None:
    a = make_agent("a")
    async with ConsoleClient(tetherd.url, tetherd.admin_token) as console:  # more than one window (32)
        created = [await console.call("task.create", {"command": f"record --i {i}", "agent": a.agent_id})
                   for i in range(80)]
    ids = [c["task_id"] for c in created]
    a.start()
    for task_id in ids:
        assert tetherd.ctl("wait", str(task_id), "--timeout", "30")[0] == 0
    assert sorted(r["task_id"] for r in a.runs()) == ids


def test_concurrent_consoles_are_served(tetherd: Tetherd, make_agent: Callable[..., AgentProc]) -> None:
    a = make_agent("a", start=True)
    errors: list[BaseException] = []

    def operator(n: int) -> None:
        try:
            task_id = tetherd.task(f"record --op {n}", "--agent", a.agent_id)
            assert tetherd.ctl("wait", str(task_id), "--timeout", "30")[0] == 0
        except BaseException as exc:  # collected and re-raised in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=operator, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert sorted(r["args"]["op"] for r in a.runs()) == ["0", "1", "2", "3"]


async def test_console_client_serves_concurrent_calls_on_one_session(
    tetherd: Tetherd, make_agent: Callable[..., AgentProc]
) -> None:
    a = make_agent("a")
    async with ConsoleClient(tetherd.url, tetherd.admin_token) as console:
        created = await asyncio.gather(
            *(console.call("task.create", {"command": f"record --n {n}", "agent": a.agent_id}) for n in range(50)),
            console.call("task.get", {"task_id": 10_000}),
            return_exceptions=True,
        )
        *tasks, missing = created
        assert isinstance(missing, RequestRefused) and missing.code == 1302
        ids = [t["task_id"] for t in tasks]
        assert sorted(ids) == list(range(1, 51))
        listed = await console.call("task.list", {"agent": a.agent_id})
        assert sorted(row["task_id"] for row in listed) == ids


def test_a_run_untasked_while_its_agent_was_down_does_not_run_when_it_returns(
    tetherd: Tetherd, make_agent: Callable[..., AgentProc], tmp_path: Path
) -> None:
    a = make_agent("a")
    a.start("--concurrency", "1")
    first, second = tmp_path / "gate1", tmp_path / "gate2"
    os.mkfifo(first)
    os.mkfifo(second)
    running = tetherd.task(f"gate --fifo {first}", "--agent", a.agent_id)
    writer = open(first, "w")  # the gate command is running: the agent's one slot is taken
    ahead = tetherd.task(f"gate --fifo {second}", "--agent", a.agent_id, "--priority", "urgent")
    held = tetherd.task("record --held yes", "--agent", a.agent_id, "--priority", "low")
    for task_id in (ahead, held):
        wait_until(lambda t=task_id: states(tetherd.show(t))[a.agent_id] == "acked", what="journaled, not started")
    a.kill(signal.SIGKILL)  # the agent holds both, started neither
    writer.close()
    assert tetherd.ctl("untask", str(held))[1]["cancelled"] == 1  # no session: the cancel reaches nobody now
    held_delivery = tetherd.show(held)["deliveries"][0]["delivery_id"]
    a.start("--concurrency", "1")  # runs the urgent gate first, the held one waits for the slot ...
    assert a.log is not None
    a.log.wait_for(rf"delivery_cancelled.*delivery_id={held_delivery}\b")  # ... and is told on connect
    with open(second, "w") as release:
        release.write("go\n")
    assert tetherd.ctl("wait", str(ahead), "--timeout", "30")[0] == 0
    assert tetherd.ctl("wait", str(running), "--timeout", "30", check=False)[0] == 1  # killed while running
    sync = tetherd.task("record --sync 1", "--agent", a.agent_id)
    assert tetherd.ctl("wait", str(sync), "--timeout", "30")[0] == 0
    assert [r["task_id"] for r in a.runs()] == [ahead, sync]  # the untasked one never ran


def test_an_untask_that_reaches_a_frozen_agent_with_its_push_never_starts_the_command(
    tetherd: Tetherd, make_agent: Callable[..., AgentProc]
) -> None:
    """Issue 17.14: the agent holds the push and the cancel, unread (SIGSTOP); when it
    resumes it applies every frame already received before starting new work, so the cancel
    removes the delivery it has not started: the command never runs."""
    a = make_agent("a", start=True)
    assert a.proc is not None and a.log is not None
    frames_out = 'tether_frames_total{direction="out"}'
    a.proc.send_signal(signal.SIGSTOP)
    try:
        before = tetherd.metrics()
        task_id = tetherd.task("record --frozen 1", "--agent", a.agent_id)
        wait_until(lambda: tetherd.metrics()["tether_deliveries_pushed_total"] > before["tether_deliveries_pushed_total"],
                   what="the push written to the frozen agent")
        pushed = tetherd.metrics()[frames_out]
        assert tetherd.ctl("untask", str(task_id))[1]["cancelled"] == 1  # not acknowledged: cancelled at once
        wait_until(lambda: tetherd.metrics()[frames_out] > pushed, what="the cancel written to the frozen agent")
        mark = a.log.mark()
    finally:
        a.proc.send_signal(signal.SIGCONT)
    a.log.wait_for(r"event=delivery_cancelled .*state=pending", start=mark)
    sync = tetherd.task("record --sync 1", "--agent", a.agent_id)
    assert tetherd.ctl("wait", str(sync), "--timeout", "30")[0] == 0
    assert [r["args"] for r in a.runs()] == [{"sync": "1"}]  # the frozen task never ran
    assert states(tetherd.show(task_id)) == {a.agent_id: "cancelled"}
