"""Agents' configuration with drift (issue 19.7) against a real tetherd and real agents:
a drifted agent gets its desired configuration when it connects and is no longer drifted;
an online agent gets a change at once; its ``@agent.on_config`` handler sees the whole
configuration, and one that refuses it is shown; bad input is refused whole."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from harness import BIN, AgentProc, Tetherd, wait_until


def config(tetherd: Tetherd, agent_id: str) -> dict:
    return tetherd.ctl("config", "show", agent_id)[1]


def drifted(tetherd: Tetherd) -> list[str]:
    return [r["agent_id"] for r in tetherd.ctl("config", "drift")[1]]


def test_a_drifted_agent_gets_its_configuration_on_connect_and_is_no_longer_drifted(
        tmp_path: Path, tetherd: Tetherd, make_agent: Callable[..., AgentProc]) -> None:
    agent = make_agent("web-1", "web")
    log = tmp_path / "configs.jsonl"
    agent.env["TETHER_TEST_CONFIG_LOG"] = str(log)
    _, layer = tetherd.ctl("config", "set", "--tag", "web", "state_interval=10m", "app.mode=strict")
    assert (layer["agents"], layer["pushed"]) == (1, 0)  # enrolled, offline
    tetherd.ctl("config", "set", "--agent", agent.agent_id, "app.retries=3")
    assert drifted(tetherd) == [agent.agent_id]
    before = config(tetherd, agent.agent_id)
    assert before["drift"] and before["reported"] is None
    assert before["origins"] == {"state_interval": "tag:web", "app.mode": "tag:web", "app.retries": "agent",
                                 "log_level": "default"}
    agent.start()
    after = wait_until(lambda: (c := config(tetherd, agent.agent_id))["drift"] is False and c, what="in sync")
    assert after["reported"] == after["desired"] == {"state_interval": 600.0, "log_level": "info",
                                                     "app.mode": "strict", "app.retries": 3}
    assert drifted(tetherd) == []
    assert json.loads(log.read_text().splitlines()[-1]) == after["desired"]  # the on_config hook saw it all
    agent.log.wait_for(r"config_applied .*state_interval=600")
    assert tetherd.log.wait_for(rf"event=config_drift agent_id={agent.agent_id}")
    env = {**tetherd.env, "TETHER_URL": tetherd.url, "TETHER_TOKEN": tetherd.admin_token}
    shown = subprocess.run([str(BIN / "tetherctl"), "agent", "show", agent.agent_id], capture_output=True, text=True,
                           env=env, timeout=30, check=True).stdout
    assert f"configuration: in sync (desired {after['desired_hash'][:16]})" in shown
    # A restart is no drift: the agent runs with the configuration its journal kept (its
    # handlers see it again) and reports it in sync; tetherd pushes nothing.
    agent.kill(signal.SIGTERM)
    restarted = time.time()
    agent.start()
    wait_until(lambda: len(log.read_text().splitlines()) == 2, what="the configuration applied again at start")
    wait_until(lambda: (tetherd.ctl("agent", "show", agent.agent_id)[1]["state_at"] or 0) > restarted,
               what="the restarted agent's first state report")
    assert json.loads(log.read_text().splitlines()[-1]) == after["desired"]
    assert config(tetherd, agent.agent_id)["drift"] is False
    assert tetherd.log.text().count(f"event=config_drift agent_id={agent.agent_id}") == 1


def test_an_online_agent_gets_a_change_at_once_and_a_refusal_is_shown(
        tetherd: Tetherd, make_agent: Callable[..., AgentProc]) -> None:
    agent = make_agent("live", start=True)
    wait_until(lambda: config(tetherd, agent.agent_id)["reported"] is not None, what="a first report")
    _, layer = tetherd.ctl("config", "set", "--agent", agent.agent_id, "log_level=debug")
    assert (layer["agents"], layer["pushed"]) == (1, 1)
    wait_until(lambda: config(tetherd, agent.agent_id)["reported"]["log_level"] == "debug", what="applied")
    tetherd.ctl("config", "set", "--agent", agent.agent_id, "app.fail=true")
    refused = wait_until(lambda: (c := config(tetherd, agent.agent_id))["error"] and c, what="the refusal")
    assert refused["drift"] and "on_config handler failed: RuntimeError: app.fail is set" in refused["error"]
    assert refused["reported"]["log_level"] == "debug" and "app.fail" not in refused["reported"]
    [row] = tetherd.ctl("config", "drift")[1]
    assert row["agent_id"] == agent.agent_id and row["online"] and "app.fail is set" in row["error"]
    tetherd.ctl("config", "unset", "--agent", agent.agent_id, "app.fail")
    wait_until(lambda: not config(tetherd, agent.agent_id)["drift"], what="in sync after the unset")
    assert config(tetherd, agent.agent_id)["error"] == ""


def test_bad_input_is_refused_whole_with_a_clear_error(tetherd: Tetherd,
                                                        make_agent: Callable[..., AgentProc]) -> None:
    agent = make_agent("quiet")
    cases = [
        (("config", "set", "--agent", "no-such-agent", "state_interval=1m"), "no agent with id 'no-such-agent'"),
        (("config", "set", "--tag", "web", "state_intrval=1m"), "did you mean 'state_interval'?"),
        (("config", "set", "--agent", agent.agent_id, "app.ok=1", "state_interval=soon"),
         "state_interval must be a duration"),
        (("config", "set", "--agent", agent.agent_id, "log_level=loud"), "log_level must be one of"),
        (("config", "set", "--agent", agent.agent_id, "nokey"), "'nokey' is not KEY=VALUE"),
        (("config", "show", "no-such-agent"), "no agent with id 'no-such-agent'"),
    ]
    for argv, message in cases:
        code, error = tetherd.ctl(*argv, check=False)
        assert code != 0 and message in error and "Traceback" not in error, (argv, code, error)
    shown = config(tetherd, agent.agent_id)
    assert shown["desired"] == {"state_interval": 300.0, "log_level": "info"}  # app.ok was not stored either
    assert drifted(tetherd) == []
