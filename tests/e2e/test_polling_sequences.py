"""Polling commands end to end (Cortex XSOAR "Scheduled Commands"): real tetherd, real agents.

The commands are in ``commands.py``; tetherd runs with ``min_interval = 0.5`` (the test
floor, ``harness.TEST_SETTINGS``) so sequences take seconds, not minutes.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import subprocess
import time
from collections.abc import Callable
from typing import Any

from harness import BIN, AgentProc, Tetherd, wait_until

from tether.console import ConsoleClient


def only(view: dict[str, Any]) -> dict[str, Any]:
    (delivery,) = view["deliveries"]
    return delivery  # type: ignore[no-any-return]


def history(tetherd: Tetherd, task_id: int) -> list[dict[str, Any]]:
    return only(tetherd.show(task_id, "--history"))["history"]  # type: ignore[no-any-return]


def test_a_polling_command_runs_three_times_passing_its_args_along(
    tetherd: Tetherd, make_agent: Callable[..., AgentProc]
) -> None:
    a = make_agent("a", start=True)
    task_id = tetherd.task("countdown --n 3 --polling", "--agent", a.agent_id)
    rc, view = tetherd.ctl("wait", str(task_id), "--timeout", "60")
    assert rc == 0, view
    d = only(view)
    assert (d["state"], d["run"], d["result"]) == ("done", 3, {"done": True, "runs": 3})

    runs = a.runs()
    assert [(r["delivery_id"], r["run"], r["args"]["n"]) for r in runs] == [
        (d["delivery_id"], 1, "3"), (d["delivery_id"], 2, 2), (d["delivery_id"], 3, 1)]
    assert all(r["args"]["polling"] in (True, "true") for r in runs)
    gaps = [b["at"] - a_["at"] for a_, b in itertools.pairwise(runs)]
    assert all(g >= 0.9 for g in gaps), gaps  # the 1 s interval was held by the daemon between runs

    entries = history(tetherd, task_id)
    assert [(e["run"], e["state"]) for e in entries] == [(1, "waiting"), (2, "waiting"), (3, "done")]
    assert [e["partial_result"] for e in entries[:2]] == [{"left": 2}, {"left": 1}]
    assert entries[0]["poll_message"] == "Fetching Results:" and entries[0]["next_run_at"] > entries[0]["at"]
    assert entries[2]["output"] == {"done": True, "runs": 3} and entries[2]["by"] == "agent"
    env = {**tetherd.env, "TETHER_URL": tetherd.url, "TETHER_TOKEN": tetherd.admin_token}
    text = subprocess.run([str(BIN / "tetherctl"), "show", str(task_id), "--history"], capture_output=True,
                          text=True, env=env, check=True).stdout
    assert "history (3 entries)" in text and "#1" in text and "Fetching Results:" in text and '"left": 2' in text


def test_a_scheduled_command_may_run_another_command_with_its_own_args(
    tetherd: Tetherd, make_agent: Callable[..., AgentProc]
) -> None:
    a = make_agent("a", start=True)
    task_id = tetherd.task("submit --url http://example.invalid", "--agent", a.agent_id)
    rc, view = tetherd.ctl("wait", str(task_id), "--timeout", "60")
    assert rc == 0, view
    assert [(r["what"], r["run"]) for r in a.runs()] == [("submit", 1), ("countdown", 2), ("countdown", 3)]
    assert a.runs()[1]["args"] == {"n": 2, "polling": True, "job": "j-1"}
    first, *_ = history(tetherd, task_id)
    assert (first["partial_result"], first["poll_message"]) == ({"submitted": "j-1"}, "submitted; polling")


def test_a_run_that_raises_ends_the_sequence_as_failed(tetherd: Tetherd, make_agent: Callable[..., AgentProc]) -> None:
    a = make_agent("a", start=True)
    task_id = tetherd.task("poll_then_fail --polling", "--agent", a.agent_id)
    rc, view = tetherd.ctl("wait", str(task_id), "--timeout", "60", check=False)
    assert rc == 1, view
    assert only(view)["state"] == "failed" and "the remote job vanished" in only(view)["error"]
    entries = history(tetherd, task_id)
    assert [(e["run"], e["state"], e["by"]) for e in entries] == [(1, "waiting", "agent"), (2, "failed", "agent")]
    assert len(a.runs()) == 2  # no third run after the error


def test_a_sequence_that_never_finishes_ends_with_the_daemons_timeout_entry(
    tetherd: Tetherd, make_agent: Callable[..., AgentProc]
) -> None:
    a = make_agent("a", start=True)
    task_id = tetherd.task("never_done --polling", "--agent", a.agent_id, "--show-polling-output")
    rc, view = tetherd.ctl("wait", str(task_id), "--timeout", "60", check=False)
    assert rc == 1, view
    d = only(view)
    assert (d["state"], d["error"]) == ("failed", "polling timed out after 2 s")
    entries = history(tetherd, task_id)
    assert entries[-1]["by"] == "daemon" and entries[-1]["error"] == "polling timed out after 2 s"
    *waiting, _ = entries
    assert all(e["state"] == "waiting" for e in waiting) and len(waiting) >= 2
    assert entries[-1]["at"] - waiting[0]["at"] < 10  # the timeout counts from the first schedule
    # On a busy machine the next run can be queued just before the deadline: the daemon then
    # ends that run, which never reported a start, so its started_at stays empty.
    assert d["run"] in (len(waiting), len(waiting) + 1)
    if d["run"] == len(waiting):
        assert d["started_at"] is not None
    time.sleep(1.5)  # three intervals: a sequence still going would have run two or three more times
    runs = a.runs()  # one run per waiting entry, and at most the one pushed just before the deadline
    assert [r["run"] for r in runs] == list(range(1, len(runs) + 1)) and len(runs) - len(waiting) in (0, 1), runs


def test_the_next_run_waits_for_an_offline_agent_and_is_pushed_when_it_reconnects(
    tetherd: Tetherd, make_agent: Callable[..., AgentProc]
) -> None:
    a = make_agent("a", start=True)
    task_id = tetherd.task("slow_countdown --n 2 --polling", "--agent", a.agent_id)
    wait_until(lambda: only(tetherd.show(task_id))["state"] == "waiting", what="run 1 to schedule run 2")
    a.kill(signal.SIGTERM)
    # the next run falls due while the agent is away: it is queued, not lost
    wait_until(lambda: (only(tetherd.show(task_id))["state"], only(tetherd.show(task_id))["run"]) == ("queued", 2),
               timeout=20, what="run 2 queued for the offline agent")
    a.start()
    rc, view = tetherd.ctl("wait", str(task_id), "--timeout", "60")
    assert rc == 0, view
    assert [r["run"] for r in a.runs()] == [1, 2]


def test_a_poll_still_fires_on_time_after_tetherd_is_killed(
    tetherd: Tetherd, make_agent: Callable[..., AgentProc]
) -> None:
    a = make_agent("a", start=True)
    task_id = tetherd.task("slow_countdown --n 2 --polling", "--agent", a.agent_id)
    waiting = wait_until(lambda: (d := only(tetherd.show(task_id)))["state"] == "waiting" and d,
                         what="run 1 to schedule run 2")
    due = waiting["next_run_at"]
    tetherd.kill(signal.SIGKILL)
    tetherd.start()
    rc, view = tetherd.ctl("wait", str(task_id), "--timeout", "60")
    assert rc == 0, view
    second = a.runs()[1]
    assert second["run"] == 2
    assert due - 0.1 <= second["at"] <= due + 3.0, (due, second["at"])  # on time: not early, not lost


def test_an_interval_below_the_floor_is_raised_and_the_history_says_so(
    tetherd: Tetherd, make_agent: Callable[..., AgentProc]
) -> None:
    a = make_agent("a", start=True)
    task_id = tetherd.task("hasty --polling", "--agent", a.agent_id)
    assert tetherd.ctl("wait", str(task_id), "--timeout", "60")[0] == 0
    first = history(tetherd, task_id)[0]
    assert first["note"] == "next run asked for in 0.1 s; raised to the 0.5 s floor"
    assert first["next_run_at"] - first["at"] >= 0.45


def test_entries_after_the_first_that_show_nothing_are_hidden_unless_asked_for(
    tetherd: Tetherd, make_agent: Callable[..., AgentProc]
) -> None:
    """XSOAR hides scheduled entries after the first that carry no output; a task's
    --show-polling-output shows them."""
    a = make_agent("a", start=True)
    hidden = tetherd.task("quiet_countdown --n 4 --polling", "--agent", a.agent_id)
    shown = tetherd.task("quiet_countdown --n 4 --polling", "--agent", a.agent_id, "--show-polling-output")
    for task_id in (hidden, shown):
        assert tetherd.ctl("wait", str(task_id), "--timeout", "60")[0] == 0
    d = only(tetherd.show(hidden, "--history"))
    assert [(e["run"], e["state"]) for e in d["history"]] == [(1, "waiting"), (4, "done")]
    assert d["history_hidden"] == 2
    assert [e["run"] for e in history(tetherd, shown)] == [1, 2, 3, 4]


async def test_ten_thousand_waiting_polls_hold_no_task_each(
    tetherd: Tetherd, make_agent: Callable[..., AgentProc]
) -> None:
    a = make_agent("a", start=True)
    waiting = 'tether_deliveries_total{state="waiting"}'
    async with ConsoleClient(tetherd.url, tetherd.admin_token) as console:
        await console.call("task.create", {"command": "park", "agent": a.agent_id})
        wait_until(lambda: tetherd.metrics()[waiting] == 1, what="the first poll to wait")
        before = tetherd.metrics()["tether_asyncio_tasks"]
        for start in range(0, 9_999, 1000):
            await asyncio.gather(*(console.call("task.create", {"command": "park", "agent": a.agent_id})
                                   for _ in range(min(1000, 9_999 - start))))
    wait_until(lambda: tetherd.metrics()[waiting] == 10_000, timeout=120, what="10,000 polls waiting")
    after = tetherd.metrics()
    assert after["tether_timers_pending"] >= 10_000  # each wait is a wheel entry ...
    assert after["tether_asyncio_tasks"] <= before + 2, (before, after["tether_asyncio_tasks"])  # ... not a task


def test_show_of_a_cancelled_polling_delivery_shows_no_next_run(
    tetherd: Tetherd, make_agent: Callable[..., AgentProc]
) -> None:
    a = make_agent("a", start=True)
    task_id = tetherd.task("slow_countdown --n 5 --polling", "--agent", a.agent_id)
    wait_until(lambda: only(tetherd.show(task_id))["state"] == "waiting", what="run 1 to schedule run 2")
    env = {**tetherd.env, "TETHER_URL": tetherd.url, "TETHER_TOKEN": tetherd.admin_token}

    def shown() -> str:
        return subprocess.run([str(BIN / "tetherctl"), "show", str(task_id)], capture_output=True, text=True,
                              env=env, check=True).stdout

    assert "next run" in shown()
    assert tetherd.ctl("untask", str(task_id))[0] == 0
    d = only(tetherd.show(task_id))
    assert (d["state"], d["next_run_at"]) == ("cancelled", None)
    text = shown()
    assert "next run" not in text and "polls until" not in text, text
