"""``tether-agent once`` (issue 19.1): an agent that keeps no session takes every pending
delivery, runs them by priority, reports and exits; the window applies after sorting by
priority (Armadito's fetch limit applied before sorting must not happen here); a SIGKILL
half-way loses nothing and runs nothing twice."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from harness import BIN, COMMANDS, AgentProc, LogWatcher, Tetherd, wait_until
from websockets.sync.client import connect

from tether.protocol import MSGPACK, PROTOCOL_VERSION, Hello, Task, Welcome, decode_from_daemon
from tether.protocol.codec import unbatch
from tether.protocol.frames import Batch

PRIORITIES = ("low", "medium", "high", "urgent")


def once(agent: AgentProc, *extra: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "tether-agent"), "once", "--state-dir", str(agent.state_dir),
                           "--commands", f"{COMMANDS}:agent", *extra],
                          capture_output=True, text=True, env=agent.env, timeout=timeout)


def task(tetherd: Tetherd, agent: AgentProc, command: str, priority: str, *extra: str) -> int:
    _, out = tetherd.ctl("task", command, "--agent", agent.agent_id, "--priority", priority, *extra)
    return int(out["task_id"])


def states(tetherd: Tetherd, task_ids: list[int]) -> dict[int, tuple[str, str]]:
    """Each task's one delivery: its state and error."""
    out = {}
    for task_id in task_ids:
        (delivery,) = tetherd.show(task_id)["deliveries"]
        out[task_id] = (delivery["state"], delivery["error"])
    return out


def test_once_with_random_wait_runs_everything_by_priority_and_exits_0(
        tetherd: Tetherd, make_agent: Callable[..., AgentProc]) -> None:
    agent = make_agent("a")
    order = ["low", "urgent", "medium", "high", "urgent", "low"]
    ids = [task(tetherd, agent, f"record --n {i}", p) for i, p in enumerate(order)]

    done = once(agent, "--random-wait", "2")

    assert done.returncode == 0, done.stderr
    waited = float(re.search(r"event=waiting seconds=([0-9.]+)", done.stderr).group(1))  # type: ignore[union-attr]
    assert 0 <= waited <= 2
    assert "ran 6 deliveries: 6 done, 0 failed" in done.stderr
    ran = [r["task_id"] for r in agent.runs()]
    expected = sorted(ids, key=lambda t: (-PRIORITIES.index(order[ids.index(t)]), t))
    assert ran == expected  # urgent first, then oldest
    assert set(states(tetherd, ids).values()) == {("done", "")}
    # Nothing is left: another once finds nothing, and exits 0 at once.
    again = once(agent, "--json")
    assert again.returncode == 0 and json.loads(again.stdout) == {"complete": True, "ran": []}


def test_a_failing_job_prints_its_error_and_exits_1(tetherd: Tetherd, make_agent: Callable[..., AgentProc]) -> None:
    agent = make_agent("a")
    ok = task(tetherd, agent, "record", "medium")
    bad = task(tetherd, agent, "fail --message 'the disk is on fire'", "high")

    done = once(agent)

    assert done.returncode == 1
    assert f"failed: task {bad}, delivery" in done.stderr
    assert "fail: RuntimeError: the disk is on fire" in done.stderr
    assert "ran 2 deliveries: 1 done, 1 failed" in done.stderr
    assert states(tetherd, [ok, bad]) == {ok: ("done", ""), bad: ("failed", "RuntimeError: the disk is on fire")}
    as_json = once(agent, "--json")  # the results were committed: nothing to send again
    assert as_json.returncode == 0 and json.loads(as_json.stdout)["ran"] == []


def test_sigkill_during_once_then_once_again_loses_nothing_and_runs_nothing_twice(
        tetherd: Tetherd, make_agent: Callable[..., AgentProc], tmp_path: Path,
        fault_log: Callable[..., None]) -> None:
    agent = make_agent("a")
    fifo = tmp_path / "gate"
    os.mkfifo(fifo)
    first = task(tetherd, agent, "record --n first", "urgent")
    gate = task(tetherd, agent, "gate", "high", "--args", json.dumps({"fifo": str(fifo)}))
    later = [task(tetherd, agent, f"record --n {i}", "low") for i in range(3)]

    proc = subprocess.Popen([str(BIN / "tether-agent"), "once", "--state-dir", str(agent.state_dir),
                             "--commands", f"{COMMANDS}:agent"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=agent.env)
    log = LogWatcher(proc.stderr, "once")
    try:
        log.wait_for(rf"command_started .*task_id={gate}\b")
        with open(fifo, "w"):  # returns once the gate command has it open: it is running
            proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        log.close()
        assert proc.stderr is not None
        proc.stderr.close()
    assert [r["task_id"] for r in agent.runs()] == [first]

    again = once(agent)

    # The gate was running when the agent was killed: reported failed, never run again.
    assert again.returncode == 1, again.stderr
    assert "agent restarted while the command was running" in again.stderr
    runs = [r["task_id"] for r in agent.runs()]
    assert runs == [first, *later]  # each once: nothing run twice, nothing lost
    assert states(tetherd, [first, gate, *later]) == {
        first: ("done", ""), gate: ("failed", "agent restarted while the command was running"),
        **{t: ("done", "") for t in later}}
    final = once(agent, "--json")
    assert final.returncode == 0 and json.loads(final.stdout)["ran"] == []
    assert [r["task_id"] for r in agent.runs()] == runs
    fault_log("Crashes", "tether-agent once SIGKILLed while a command runs (5 tasks), then once again", 1,
              "the 4 others each ran exactly once, the killed one reported failed and never run again, every "
              "result stored; a third once finds nothing")


@pytest.fixture
def window_10(tmp_path: Path, env: dict[str, str]) -> Any:
    from harness import TEST_SETTINGS
    daemon = Tetherd(tmp_path / "w10", env, {**TEST_SETTINGS, "window": 10})
    daemon.start()
    yield daemon
    if daemon.proc is not None and daemon.proc.poll() is None:
        daemon.kill(signal.SIGKILL)


def pushed(ws: Any, count: int) -> list[Task]:
    """The next ``count`` tasks the daemon pushes on a session (batches unpacked)."""
    tasks: list[Task] = []
    while len(tasks) < count:
        data = ws.recv(timeout=15)
        frame = decode_from_daemon(data)
        frames = unbatch(frame, isinstance(data, bytes), to_daemon=False) if isinstance(frame, Batch) else [frame]
        tasks += [f for f in frames if isinstance(f, Task)]
    return tasks


def test_twelve_queued_tasks_to_an_offline_agent_with_window_10_the_ten_highest_go_first(
        window_10: Tetherd, tmp_path: Path, env: dict[str, str]) -> None:
    """Armadito applied its fetch limit (10) before sorting by priority: an urgent job
    queued after ten low ones waited for a second fetch. Here the window applies after."""
    tetherd = window_10
    agent = AgentProc("a", tmp_path, tetherd, env)
    agent.enroll()
    mixed = ["low", "low", "medium", "low", "urgent", "high", "low", "medium", "high", "urgent", "low", "medium"]
    ids = [task(tetherd, agent, f"record --n {i}", p) for i, p in enumerate(mixed)]
    by_priority = sorted(ids, key=lambda t: (-PRIORITIES.index(mixed[ids.index(t)]), t))

    identity = agent.identity()
    with connect(tetherd.url, max_size=None) as ws:  # the agent's session, but nothing is acknowledged
        ws.send(MSGPACK.encode(Hello(role="agent", version=PROTOCOL_VERSION, agent_id=identity["agent_id"],
                                     token=identity["token"], features=["batch"])))
        assert isinstance(decode_from_daemon(ws.recv(timeout=10)), Welcome)
        first = pushed(ws, 10)
    assert [t.task_id for t in first] == by_priority[:10]
    assert {mixed[ids.index(t)] for t in by_priority[10:]} == {"low"}

    done = once(agent)  # takes all twelve (the window refills as it acknowledges), one at a time
    assert done.returncode == 0, done.stderr
    assert [r["task_id"] for r in agent.runs()] == by_priority
    wait_until(lambda: set(states(tetherd, ids).values()) == {("done", "")}, what="every task done")
