"""The built-in ``scan`` end to end: its progress seen live through ``tetherctl watch``, the
matches it reports, and an untask that stops it within a second. Real tetherd, real agent.

The scan is made to last seconds by a large sparse file (no disk is written: hashing its
zeros is the work), so the test waits on progress events, never on a sleep."""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness import BIN, AgentProc, Tetherd, wait_until

BIG = 3 << 30
"""A sparse file this large takes a few seconds to hash: several progress reports."""


def scan_tree(root: Path) -> str:
    """A tree to scan: a large sparse file, and a small one whose SHA-256 is returned."""
    root.mkdir()
    with open(root / "big.img", "wb") as f:
        f.truncate(BIG)
    (root / "sub").mkdir()
    (root / "sub" / "dropper.sh").write_bytes(b"#!/bin/sh\necho bad\n")
    (root / "sub" / "fine.txt").write_bytes(b"fine\n")
    return hashlib.sha256(b"#!/bin/sh\necho bad\n").hexdigest()


def watch(tetherd: Tetherd, task_id: int) -> subprocess.Popen[str]:
    env = {**tetherd.env, "TETHER_URL": tetherd.url, "TETHER_TOKEN": tetherd.admin_token}
    return subprocess.Popen([str(BIN / "tetherctl"), "watch", str(task_id), "--json", "--timeout", "120"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def stop(proc: subprocess.Popen[str]) -> None:
    proc.kill()
    proc.communicate()


def next_event(proc: subprocess.Popen[str], topic: str, pred: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """Read the watch's JSON lines until an event of ``topic`` that ``pred`` accepts."""
    assert proc.stdout is not None
    for line in proc.stdout:
        event = json.loads(line)
        if event.get("topic") == topic and pred(event["data"]):
            return event["data"]  # type: ignore[no-any-return]
    raise AssertionError(f"watch ended without a {topic} event: {proc.wait()} {proc.stderr.read() if proc.stderr else ''}")


def test_scan_progress_is_seen_live_and_its_matches_reported(
    tetherd: Tetherd, make_agent: Callable[..., AgentProc], tmp_path: Path
) -> None:
    a = make_agent("a", start=True)
    bad = scan_tree(tmp_path / "tree")
    task_id = tetherd.task(f"scan {tmp_path / 'tree'} --hashes {bad}", "--agent", a.agent_id)
    proc = watch(tetherd, task_id)
    try:
        first = next_event(proc, "progress", lambda d: d["percent"] is not None and 0 < d["percent"] < 100)
        assert first["agent_id"] == a.agent_id and "/3 files" in first["message"]
        second = next_event(proc, "progress", lambda d: d["percent"] is not None and d["percent"] > first["percent"])
        assert second["updated_at"] - first["updated_at"] >= 0.9  # at most one a second
        # tetherctl show gives the last progress while it runs
        shown = tetherd.show(task_id)["deliveries"][0]
        assert shown["state"] == "running" and "% " in shown["progress"] and "files" in shown["progress"]
        assert proc.stdout is not None
        *_, last = proc.stdout.read().splitlines()
        assert proc.wait(timeout=60) == 0
    finally:
        stop(proc)
    final = json.loads(last)
    (d,) = final["deliveries"]
    assert d["state"] == "done"
    assert d["result"]["matches"] == [{"path": str(tmp_path / "tree" / "sub" / "dropper.sh"), "sha256": bad,
                                       "size": 19}]
    assert d["result"]["files"] == 3 and d["result"]["bytes"] == BIG + 19 + 5
    # the match was also raised as an alert
    _, alerts = tetherd.ctl("alerts", "--agent", a.agent_id)
    assert [(x["kind"], x["name"], x["path"], x["hash"], x["count"]) for x in alerts["alerts"]] == [
        ("scan", "hash match", str(tmp_path / "tree" / "sub" / "dropper.sh"), bad, 1)]


def test_untask_stops_a_running_scan_within_a_second(
    tetherd: Tetherd, make_agent: Callable[..., AgentProc], tmp_path: Path
) -> None:
    a = make_agent("a", start=True)
    scan_tree(tmp_path / "tree")
    task_id = tetherd.task(f"scan {tmp_path / 'tree'}", "--agent", a.agent_id)
    proc = watch(tetherd, task_id)
    try:
        next_event(proc, "progress", lambda d: d["percent"] is not None and d["percent"] > 0)
        assert a.log is not None
        mark = a.log.mark()
        tetherd.ctl("untask", str(task_id))  # returns once the cancel is committed and handed to the session
        untasked = time.monotonic()
        a.log.wait_for(r"event=command_cancelled .*command=scan", timeout=10, start=mark)
        stopped = time.monotonic() - untasked
        cancelled = next_event(proc, "delivery", lambda d: d["terminal"])
        assert cancelled["state"] == "cancelled"
        assert proc.wait(timeout=30) == 1  # watch's exit code: a delivery did not end done
    finally:
        stop(proc)
    assert stopped < 1.0, f"the scan went on {stopped:.2f} s after the untask"
    view = tetherd.show(task_id)
    assert view["deliveries"][0]["state"] == "cancelled"
    wait_until(lambda: "scan" not in str(a.status().get("running", 0)) and a.status().get("running") == 0,
               what="the agent's slot freed")
