"""Recurring schedules end to end: real tetherd, a real agent, tetherctl as an operator uses it.

tetherd runs with ``min_interval = 0.5`` (``harness.TEST_SETTINGS``), so ``--every 2s`` is allowed.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from typing import Any

from harness import AgentProc, Tetherd, wait_until


def schedule(tetherd: Tetherd, name: str) -> dict[str, Any]:
    return tetherd.ctl("schedule", "show", name)[1]  # type: ignore[no-any-return]


def test_a_schedule_fires_tasks_pauses_and_resumes(tetherd: Tetherd, make_agent: Callable[..., AgentProc]) -> None:
    a = make_agent("a", "linux", start=True)
    rc, added = tetherd.ctl("schedule", "add", "often", "--every", "2s", "record --from schedule", "--tag", "linux")
    assert rc == 0 and added["every"] == 2.0 and added["target"] == "tag:linux" and added["fired"] == 0
    assert 1.5 <= added["next_fire_at"] - added["created_at"] <= 2.5  # first firing one period after adding

    fired = wait_until(lambda: (s := schedule(tetherd, "often"))["fired"] >= 1 and s, timeout=20, what="a firing")
    task_id = fired["recent_tasks"][0]
    rc, view = tetherd.ctl("wait", str(task_id), "--timeout", "30")
    assert rc == 0 and view["schedule"] == "often" and view["args"] == {"from": "schedule"}
    assert task_id in [r["task_id"] for r in a.runs()]  # an ordinary task: pushed and run

    paused = tetherd.ctl("schedule", "pause", "often")[1]
    assert paused["paused"] and paused["next_fire_at"] is None
    count = schedule(tetherd, "often")["fired"]
    time.sleep(4.5)  # two periods and more: a paused schedule must not fire
    assert schedule(tetherd, "often")["fired"] == count
    _, listed = tetherd.ctl("schedule", "list")
    assert [(s["name"], s["paused"]) for s in listed] == [("often", True)]

    resumed = tetherd.ctl("schedule", "resume", "often")[1]
    assert not resumed["paused"] and resumed["next_fire_at"] > time.time() - 1
    wait_until(lambda: schedule(tetherd, "often")["fired"] > count, timeout=20, what="a firing after resume")

    assert tetherd.ctl("schedule", "rm", "often")[1] == {"name": "often", "removed": True}
    rc, err = tetherd.ctl("schedule", "show", "often", check=False)
    assert rc == 2 and "unknown_schedule (1306)" in err
    rc, view = tetherd.ctl("show", str(task_id))
    assert rc == 0 and view["schedule"] is None  # its tasks stay


def test_missed_firings_run_once_at_start_or_are_skipped(
    tetherd: Tetherd, make_agent: Callable[..., AgentProc]
) -> None:
    a = make_agent("a", start=True)
    for name, policy in (("catch_up", "once"), ("drop", "skip")):
        rc, _ = tetherd.ctl("schedule", "add", name, "--every", "3s", f"record --s {name}", "--agent", a.agent_id,
                            "--missed", policy)
        assert rc == 0
    tetherd.kill(signal.SIGKILL)
    time.sleep(7.0)  # two firings of each fall due while tetherd is down
    started = time.time()
    tetherd.start()

    drop = schedule(tetherd, "drop")  # settled before tetherd listened: nothing fired, the firing skipped
    assert (drop["fired"], drop["skipped"]) == (0, drop["missed_total"]) and drop["missed_total"] >= 2
    assert drop["next_fire_at"] > started

    catch_up = wait_until(lambda: (s := schedule(tetherd, "catch_up"))["fired"] >= 1 and s, timeout=10,
                          what="the missed firing to run once at start")
    # Firings on the grid after the start are ordinary ones (a loaded machine may see one
    # before this read): the missed ones are what was fired beyond them, and ran once.
    period, anchor = catch_up["every"], catch_up["created_at"]
    on_grid = sum(1 for k in range(1, 1000) if started < anchor + k * period < catch_up["next_fire_at"] - 0.01)
    assert catch_up["fired"] - on_grid == 1 and catch_up["missed_total"] >= 2 and catch_up["skipped"] == 0
    first = tetherd.ctl("show", str(catch_up["recent_tasks"][-1]))[1]
    assert first["created_at"] - started < 2.5  # at start, not at its next firing on the grid
    assert catch_up["next_fire_at"] > catch_up["last_fire_at"]
    task_id = catch_up["recent_tasks"][0]
    assert tetherd.ctl("wait", str(task_id), "--timeout", "30")[0] == 0


def test_bad_schedule_input_is_refused_with_a_clear_error(
    tetherd: Tetherd, make_agent: Callable[..., AgentProc]
) -> None:
    a = make_agent("a")
    base = ("schedule", "add")
    cases = [
        ((*base, "fast", "--every", "0.2s", "record", "--all"), "every 0.2s is below the 0.5s floor"),
        ((*base, "neg", "--every=-5m", "record", "--all"), "invalid duration '-5m'"),
        ((*base, "huge", "--every", "400d", "record", "--all"), "every must be more than 0 and at most"),
        ((*base, "c1", "--cron", "61 * * * *", "record", "--all"), "invalid cron expression '61 * * * *'"),
        ((*base, "c2", "--cron", "* * *", "record", "--all"), "give five fields"),
        ((*base, "c3", "--cron", "0 0 31 2 *", "record", "--all"), "matches no date"),
        ((*base, "tz", "--cron", "0 3 * * *", "--tz", "Mars/Olympus", "record", "--all"), "unknown time zone"),
        ((*base, "nobody", "--every", "1m", "record", "--agent", "nope"), "unknown_agent (1300)"),
        ((*base, "bad name", "--every", "1m", "record", "--all"), "invalid schedule name"),
        (("schedule", "pause", "missing"), "unknown_schedule (1306): no schedule named 'missing'"),
    ]
    for argv, message in cases:
        rc, err = tetherd.ctl(*argv, check=False)
        assert rc == 2 and message in err, (argv, rc, err)
    assert tetherd.ctl(*base, "dup", "--every", "1m", "record", "--agent", a.agent_id)[0] == 0
    rc, err = tetherd.ctl(*base, "dup", "--every", "1m", "record", "--agent", a.agent_id, check=False)
    assert rc == 2 and "schedule_exists (1307)" in err
    rc, ok = tetherd.ctl(*base, "nightly", "--cron", "0 3 * * *", "--tz", "Europe/Paris", "record", "--all")
    assert rc == 0 and ok["cron"] == "0 3 * * *" and ok["timezone"] == "Europe/Paris"
