"""Cortex XSOAR integrations' polling commands on a real tetherd and real agents, with only
their import line changed (``xsoar_commands.py`` says where each comes from)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from harness import BIN, AgentProc, Tetherd

XSOAR = Path(__file__).parent / "xsoar_commands.py"


@pytest.fixture
def xsoar_agent(make_agent: Callable[..., AgentProc]) -> AgentProc:
    agent = make_agent("x")
    agent.start("--commands", f"{XSOAR}:agent")
    return agent


def finished(tetherd: Tetherd, task_id: int, code: int = 0) -> dict[str, Any]:
    rc, view = tetherd.ctl("wait", str(task_id), "--timeout", "90", check=False)
    assert rc == code, [(d["state"], d["error"]) for d in view["deliveries"]]
    return tetherd.show(task_id, "--history")  # type: ignore[no-any-return]


def text(tetherd: Tetherd, *args: str) -> str:
    env = {**tetherd.env, "TETHER_URL": tetherd.url, "TETHER_TOKEN": tetherd.admin_token}
    return subprocess.run([str(BIN / "tetherctl"), *args], capture_output=True, text=True, env=env, check=True).stdout


def runs(agent: AgentProc, what: str) -> list[dict[str, Any]]:
    return [r for r in agent.runs() if r["what"] == what]


def test_aws_ssm_automation_run_polls_with_its_client_and_interval_from_the_args(
    tetherd: Tetherd, xsoar_agent: AgentProc
) -> None:
    """AWSSystemManager's run_automation_execution_command: (args, ssm_client), registered
    as functools.partial(cmd, ssm_client=...); interval_in_seconds read from each run's args."""
    task_id = tetherd.task("aws-ssm-automation-execution-run --document_name AWS-RestartEC2Instance"
                           " --interval_in_seconds 1", "--agent", xsoar_agent.agent_id)
    view = finished(tetherd, task_id)
    (d,) = view["deliveries"]
    assert d["state"] == "done" and d["run"] == 3
    assert d["result"]["HumanReadable"] == "The automation completed successfully."
    first, second, _ = d["history"]
    assert first["partial_result"]["HumanReadable"] == "Execution exec-1 is in progress"
    assert first["next_command"] == "aws-ssm-automation-execution-run"
    assert first["next_args"]["execution_id"] == "exec-1" and first["next_args"]["hide_polling_output"] is True
    assert second["partial_result"]["HumanReadable"] == "Execution exec-1 is in progress"  # it shows: it has output
    assert second["next_run_at"] - second["at"] >= 0.9  # the run's interval_in_seconds, 1 s
    assert [r["kwargs"]["DocumentName"] for r in runs(xsoar_agent, "start_automation_execution")] == [
        "AWS-RestartEC2Instance"]
    looks = runs(xsoar_agent, "get_automation_execution")
    assert [r["status"] for r in looks] == ["InProgress", "Success"]
    meta = looks[0]["metadata"]  # get_schedule_metadata() inside run 2
    assert (meta["is_polling"], meta["times_ran"], meta["polling_command"]) == (
        True, 2, "aws-ssm-automation-execution-run")
    assert meta["start_date"] < meta["end_date"]


def test_falcon_sandbox_result_a_zero_argument_predicate_and_error_entries(
    tetherd: Tetherd, xsoar_agent: AgentProc
) -> None:
    """CrowdStrikeFalconSandboxV2's crowdstrike_result_command: continue_to_poll is
    ``lambda: not has_error_state(client, key)`` (called with no argument), and without
    polling its response is an error entry (``entry_type=entryTypes['error']``): failed."""
    polling = tetherd.task("cs-falcon-sandbox-result --JobID job-1 --file-type json --polling true",
                           "--agent", xsoar_agent.agent_id)
    erroring = tetherd.task("cs-falcon-sandbox-result --JobID bad-2 --file-type json --polling yes",
                            "--agent", xsoar_agent.agent_id)
    once = tetherd.task("cs-falcon-sandbox-result --JobID job-3 --file-type json",
                        "--agent", xsoar_agent.agent_id)

    d = finished(tetherd, once, code=1)["deliveries"][0]
    assert d["error"] == "Falcon Sandbox returned an error: status code 404, response: report not found"
    d = finished(tetherd, erroring, code=1)["deliveries"][0]
    assert d["error"].startswith("Exception: Got Error state from server: {'state': 'ERROR'}")
    # job-1 is still in progress: the predicate said poll again, in polling_function's 30 s
    rc, view = tetherd.ctl("wait", str(polling), "--timeout", "1", check=False)
    (d,) = view["deliveries"]
    assert rc == 124 and d["state"] == "waiting" and d["next_run_at"] - d["finished_at"] >= 29
    assert d["next_command"] == "cs-falcon-sandbox-result"
    assert [r["key"] for r in runs(xsoar_agent, "get_state")] == ["job-1", "bad-2"]
    tetherd.ctl("untask", str(polling))


def test_gmail_schedules_several_runs_in_one_list_and_each_is_a_polling_sequence(
    tetherd: Tetherd, xsoar_agent: AgentProc
) -> None:
    """Gmail's scheduled_commands_for_more_users: a list of results, two carrying a
    ScheduledCommand: each starts its own sequence for the agent; `wait` waits for both."""
    task_id = tetherd.task("gmail-search-all-mailboxes --query is:unread", "--agent", xsoar_agent.agent_id)
    view = finished(tetherd, task_id)
    assert len(view["deliveries"]) == 2 and all(d["state"] == "done" for d in view["deliveries"])
    own, sequel = view["deliveries"]
    assert own["task_id"] == task_id and sequel["task_id"] != task_id
    assert own["history"][0]["partial_result"][0]["HumanReadable"] == "Searching mailboxes, please wait..."
    assert own["history"][0]["partial_result"][1]["EntryContext"] == {"PageToken": {"NextPageToken": "page-2"}}
    assert sequel["history"][0]["partial_result"]["HumanReadable"] == "Searching mailboxes, please wait..."
    searched = sorted(tuple(r["accounts"]) for r in runs(xsoar_agent, "search_batch"))
    assert searched == [("a@x", "b@x", "e@x"), ("c@x", "d@x")]
    assert all(r["args"]["query"] == "is:unread" for r in runs(xsoar_agent, "search_batch"))
    shown = text(tetherd, "show", str(task_id), "--history")
    assert f"(polling sequence, task {sequel['task_id']})" in shown
    # an untask of the task cancels its sequels too
    again = tetherd.task("gmail-search-all-mailboxes", "--agent", xsoar_agent.agent_id)
    tetherd.ctl("wait", str(again), "--timeout", "1", check=False)
    for _ in range(100):
        if len(tetherd.show(again)["deliveries"]) == 2:
            break
        tetherd.ctl("wait", str(again), "--timeout", "0.2", check=False)
    tetherd.ctl("untask", str(again))
    assert {d["state"] for d in tetherd.show(again)["deliveries"]} == {"cancelled"}


def test_a_command_results_with_a_schedule_polls_and_show_says_what_runs_next(
    tetherd: Tetherd, xsoar_agent: AgentProc
) -> None:
    task_id = tetherd.task("job-submit --job 7", "--agent", xsoar_agent.agent_id)
    view = finished(tetherd, task_id)
    (d,) = view["deliveries"]
    assert d["result"]["HumanReadable"] == "job 7 done after 3 runs"
    first = d["history"][0]
    assert first["partial_result"]["EntryContext"] == {"Job": {"id": "7", "status": "pending"}}
    assert first["note"] == "next run asked for in 0 s; raised to the 0.5 s floor"  # XSOAR raises to its 10 s
    assert (first["items_remaining"], first["next_command"], first["next_args"]) == (
        3, "job-poll", {"job": "7", "polling": "true"})
    assert d["poll_deadline"] - first["at"] == pytest.approx(600, abs=1)  # timeout_in_seconds=0: the default
    # run 2 showed nothing (no partial result): hidden, as XSOAR does, and counted
    assert [e["run"] for e in d["history"]] == [1, 3] and d["history_hidden"] == 1
    shown = text(tetherd, "show", str(task_id), "--history")
    assert 'job-poll {"job": "7", "polling": "true"}' in shown and "items remaining: 3" in shown
    assert [r["metadata"]["times_ran"] for r in runs(xsoar_agent, "job_poll")] == [2, 3]


def test_return_error_and_a_bad_polling_arg_fail_the_run(tetherd: Tetherd, xsoar_agent: AgentProc) -> None:
    failed = tetherd.task("fails-with-return-error", "--agent", xsoar_agent.agent_id)
    assert finished(tetherd, failed, code=1)["deliveries"][0]["error"] == "the device refused the command"
    bad = tetherd.task("job-poll --job 1 --polling maybe", "--agent", xsoar_agent.agent_id)
    error = finished(tetherd, bad, code=1)["deliveries"][0]["error"]
    assert "the 'polling' arg must be true, false, yes or no" in error and "'maybe'" in error
