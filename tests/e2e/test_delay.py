"""Per-task not-before (issue 19.2): ``tetherctl task … --delay D --jitter J``: no delivery
is pushed before its time (the task's creation + D + 0..J drawn per agent), even to an agent
online all along; ``show`` says when; the ttl still bounds it; bad values are refused."""

from __future__ import annotations

from collections.abc import Callable

from harness import AgentProc, Tetherd


def test_a_delayed_task_reaches_an_online_agent_at_its_time_not_before(
        tetherd: Tetherd, make_agent: Callable[..., AgentProc]) -> None:
    agent = make_agent("a", start=True)
    _, created = tetherd.ctl("task", "record", "--agent", agent.agent_id, "--delay", "2s", "--jitter", "1s")
    task_id = int(created["task_id"])
    assert created["delayed"] == 1

    shown = tetherd.show(task_id)
    (delivery,) = shown["deliveries"]
    assert (shown["delay"], shown["jitter"]) == (2.0, 1.0)
    assert delivery["state"] == "delayed"
    not_before = delivery["next_run_at"]
    assert shown["created_at"] + 2 <= not_before <= shown["created_at"] + 3

    code, _ = tetherd.ctl("wait", str(task_id), "--timeout", "60s")
    assert code == 0
    (ran,) = agent.runs()
    assert ran["task_id"] == task_id and ran["at"] >= not_before  # the agent ran it at its time, not before
    (delivery,) = tetherd.show(task_id)["deliveries"]
    assert delivery["state"] == "done" and delivery["sent_at"] >= not_before


def test_bad_delays_are_refused_and_nothing_is_created(tetherd: Tetherd, make_agent: Callable[..., AgentProc]) -> None:
    agent = make_agent("a")
    code, err = tetherd.ctl("task", "record", "--agent", agent.agent_id, "--delay", "soon", check=False)
    assert code == 2 and "--delay: invalid duration 'soon'" in err
    code, err = tetherd.ctl("task", "record", "--agent", agent.agent_id, "--delay", "1h", "--ttl", "30m",
                            check=False)
    assert code == 2 and "invalid_params (1201)" in err and "must be less than the ttl (1800 s)" in err
    assert "Traceback" not in err
    assert tetherd.ctl("tasks", "--agent", agent.agent_id, "--state", "all")[1] == []
