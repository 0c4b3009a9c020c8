"""Agent state (issue 19.3) against a real tetherd and real agents: the agent reports its
facts when its session opens, ``tetherctl agent show`` shows them, a changed fact writes one
history row and an unchanged report none; ``agents --online / --offline / --stale``; a
flood of state reports from an enrolled agent is counted, not stored."""

from __future__ import annotations

import platform
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

from harness import BIN, AgentProc, Tetherd, wait_until
from test_hostile_messages import agent_session

import tether
from tether.protocol import MSGPACK
from tether.protocol.agent_state import AgentState
from tether.protocol.frames import StateReport

XSOAR = Path(__file__).parent / "xsoar_commands.py"


def shown(tetherd: Tetherd, agent_id: str) -> dict:
    return tetherd.ctl("agent", "show", agent_id)[1]


def test_agent_show_has_the_state_and_a_changed_fact_writes_one_history_row(
        tetherd: Tetherd, make_agent: Callable[..., AgentProc]) -> None:
    agent = make_agent("stateful", start=True)
    first = wait_until(lambda: (d := shown(tetherd, agent.agent_id))["state"] and d, what="a state report")
    state = first["state"]
    assert state["agent_version"] == tether.__version__ and state["hostname"] == platform.node()
    assert state["platform"].startswith(platform.system().lower()) and state["boot_time"] > 0
    assert state["memory_total"] > 0 and any(d["mount"] == "/" and d["total"] > 0 for d in state["disks"])
    assert "echo" in state["commands"] and first["changes"] == [] and first["agent"]["online"] is True
    # The same agent again: its report is unchanged (gauges aside), so no history row.
    agent.kill(signal.SIGTERM)
    agent.start()
    wait_until(lambda: shown(tetherd, agent.agent_id)["state_at"] > first["state_at"], what="a second report")
    assert shown(tetherd, agent.agent_id)["changes"] == []
    # Serving other commands: one fact changed, one row.
    agent.kill(signal.SIGTERM)
    agent.start("--commands", f"{XSOAR}:agent")
    changed = wait_until(lambda: (d := shown(tetherd, agent.agent_id))["changes"] and d, what="a change")
    [change] = changed["changes"]
    assert change["fact"] == "commands" and "echo" in change["old"] and change["old"] != change["new"]
    env = {**tetherd.env, "TETHER_URL": tetherd.url, "TETHER_TOKEN": tetherd.admin_token}
    table = subprocess.run([str(BIN / "tetherctl"), "agent", "show", agent.agent_id], capture_output=True, text=True,
                           env=env, timeout=30)
    assert table.returncode == 0 and "state changes (newest first):" in table.stdout
    assert f"agent version  {tether.__version__}" in table.stdout and "commands" in table.stdout


def test_agents_online_offline_stale(tetherd: Tetherd, make_agent: Callable[..., AgentProc]) -> None:
    up = make_agent("up", start=True)
    never = make_agent("never")

    def ids(*flags: str) -> list[str]:
        return sorted(a["agent_id"] for a in tetherd.ctl("agents", *flags)[1])

    assert ids("--online") == [up.agent_id]
    assert ids("--offline") == [never.agent_id]
    assert ids("--stale", "1d") == [never.agent_id]  # never seen
    up.kill(signal.SIGTERM)
    wait_until(lambda: ids("--offline") == sorted([up.agent_id, never.agent_id]), what="the agent offline")
    assert ids("--stale", "1d") == [never.agent_id]  # seen a moment ago
    wait_until(lambda: ids("--stale", "1s") == sorted([up.agent_id, never.agent_id]), what="the agent stale")
    code, error = tetherd.ctl("agents", "--online", "--stale", "1d", check=False)
    assert code == 2 and "not allowed with argument" in error


def test_an_unknown_agent_is_a_clear_error(tetherd: Tetherd) -> None:
    code, error = tetherd.ctl("agent", "show", "no-such-agent", check=False)
    assert code != 0 and "no agent with id 'no-such-agent'" in error and "Traceback" not in error


def test_a_flood_of_state_reports_is_counted_not_stored(tmp_path: Path, tetherd: Tetherd) -> None:
    report = MSGPACK.encode(StateReport(state=AgentState(hostname="flood")))
    with agent_session(tetherd) as ws:
        for _ in range(200):  # a message each: the last report of one message supersedes the others in it
            ws.send(report)
        wait_until(lambda: tetherd.metrics().get("tether_state_reports_dropped_total", 0) >= 194,
                   what="the excess counted")
    [agent] = [a for a in tetherd.ctl("agents")[1] if a["hostname"] == "flood"]
    detail = shown(tetherd, agent["agent_id"])
    assert detail["state"]["hostname"] == "flood" and detail["changes"] == []
    assert tetherd.metrics()["tether_state_reports_dropped_total"] <= 194
