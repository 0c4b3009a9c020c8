"""Storage faults: the database full (the ``max_database_mb`` cap, which fails writes the
way a full disk does: SQLITE_FULL) or locked by another process. tetherd refuses new
work with 1503, keeps serving reads and sessions, loses nothing committed, and recovers
when room returns (SIGHUP applies a raised cap) or the lock is let go."""

from __future__ import annotations

import json
import signal
import sqlite3
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import TEST_SETTINGS, AgentProc, Tetherd, wait_until

PAD = json.dumps({"pad": "x" * 40_000})
"""Task args this big (``--args``) fill a 1 MiB database in a couple of dozen tasks."""


def padded(tetherd: Tetherd, agent: AgentProc) -> tuple[int, Any]:
    rc, out = tetherd.ctl("task", "record", "--args", PAD, "--agent", agent.agent_id, check=False)
    return rc, out if rc else int(out["task_id"])


@pytest.fixture
def capped(tmp_path: Path, env: dict[str, str]) -> Iterator[Tetherd]:
    daemon = Tetherd(tmp_path / "data", env, settings={**TEST_SETTINGS, "max_database_mb": 1})
    daemon.start()
    yield daemon
    if daemon.proc is not None and daemon.proc.poll() is None:
        daemon.kill(signal.SIGKILL)


def config_file(tetherd: Tetherd) -> Path:
    return tetherd.data_dir.with_name(tetherd.data_dir.name + "-tetherd.toml")


def healthz(tetherd: Tetherd) -> int:
    with urllib.request.urlopen(tetherd.url.replace("ws://", "http://") + "/healthz", timeout=10) as resp:
        return int(resp.status)


def test_a_full_database_refuses_new_work_serves_reads_and_recovers_on_sighup(
    capped: Tetherd, tmp_path: Path, env: dict[str, str], fault_log: Callable[..., None]
) -> None:
    worker = AgentProc("worker", tmp_path, capped, env)
    worker.enroll()
    sink = AgentProc("sink", tmp_path, capped, env)  # enrolled, never started: its queue fills the file
    sink.enroll()
    pending = [padded(capped, worker)[1] for _ in range(3)]
    assert all(isinstance(t, int) for t in pending)
    created = list(pending)
    for _ in range(200):
        rc, out = padded(capped, sink)
        if rc != 0:
            break
        created.append(out)
    else:
        pytest.fail("200 tasks of 40 kB did not fill a 1 MiB database")
    assert rc == 2 and "storage_unavailable (1503)" in out and "the database is full" in out
    assert "raise max_database_mb and send tetherd SIGHUP" in out

    # Reads and sessions go on: the worker connects, gets its three tasks and runs them,
    # but their results (40 kB each) do not fit: it is told 1503 and keeps them.
    assert healthz(capped) == 200
    rc, listed = capped.ctl("tasks", "--state", "all", "--limit", "1000")
    assert rc == 0 and {row["task_id"] for row in listed} == set(created)
    worker.start()
    assert worker.log is not None
    worker.log.wait_for(r"daemon_storage_unavailable", timeout=20)
    wait_until(lambda: len(worker.runs()) == 3, what="the worker ran its three tasks")
    assert all(capped.show(t)["deliveries"][0]["state"] != "done" for t in pending)

    # Room returns: raise the cap and SIGHUP. The worker's re-sent results commit.
    config_file(capped).write_text(config_file(capped).read_text().replace("max_database_mb = 1",
                                                                           "max_database_mb = 64"))
    mark = capped.log.mark() if capped.log else 0
    assert capped.proc is not None
    capped.proc.send_signal(signal.SIGHUP)
    assert capped.log is not None
    capped.log.wait_for(r"event=reloaded setting=max_database_mb value=64", start=mark)
    for task_id in pending:
        assert capped.ctl("wait", str(task_id), "--timeout", "30")[0] == 0
    assert sorted(r["task_id"] for r in worker.runs()) == sorted(pending), "each ran once, none again"
    created.append(capped.task("record", "--agent", worker.agent_id))

    # Nothing committed was lost, across a crash too.
    worker.kill(signal.SIGKILL)
    capped.kill(signal.SIGKILL)
    capped.start()
    rc, listed = capped.ctl("tasks", "--state", "all", "--limit", "1000")
    assert {row["task_id"] for row in listed} == set(created)
    assert all(capped.show(t)["deliveries"][0]["state"] == "done" for t in pending)
    assert "Traceback" not in capped.log.text()
    fault_log("Storage faults", f"the database full (1 MiB cap) with {len(created) - 1} tasks in it", 1,
              "new work refused 1503 (saying the database is full); reads, /healthz and agent sessions served; "
              "held results re-sent and committed after SIGHUP raised the cap; each ran once; all there after "
              "a SIGKILL")


def test_a_locked_database_refuses_writes_with_1503_and_serves_reads(
    tetherd: Tetherd, tmp_path: Path, env: dict[str, str], fault_log: Callable[..., None]
) -> None:
    agent = AgentProc("locked-out", tmp_path, tetherd, env)
    agent.enroll()
    before = tetherd.task("record", "--agent", agent.agent_id)
    other = sqlite3.connect(tetherd.data_dir / "tether.sqlite", isolation_level=None, timeout=1)
    try:
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock (a backup tool, say)
        started = time.monotonic()
        rc, out = tetherd.ctl("task", "record", "--agent", agent.agent_id, check=False)
        refused_after = time.monotonic() - started
        assert rc == 2 and "storage_unavailable (1503)" in out and "locked by another process" in out
        assert refused_after < 15  # the busy timeout (5 s), not for ever
        read_started = time.monotonic()
        rc, shown = tetherd.ctl("show", str(before))
        assert rc == 0 and shown["task_id"] == before
        assert time.monotonic() - read_started < 3, "reads do not wait for the lock"
        assert healthz(tetherd) == 200
    finally:
        other.execute("ROLLBACK")
        other.close()
    after = tetherd.task("record", "--agent", agent.agent_id)
    agent.start()
    for task_id in (before, after):
        assert tetherd.ctl("wait", str(task_id), "--timeout", "30")[0] == 0
    agent.kill(signal.SIGKILL)
    fault_log("Storage faults", "another process holding the database's write lock", 1,
              "writes refused 1503 (saying it is locked) after the busy timeout, reads answered at once, "
              "writes resume when it lets go")
