"""Identity over a machine's life (issue 19.4): a machine whose UUID changed (re-imaged,
cloned with its state directory) enrolls as a new agent; the old record is kept as
``replaced`` (with the new id) until an admin removes it, which cancels its pending
deliveries; ``agents`` hides replaced and revoked agents unless ``--all``."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable

from harness import BIN, COMMANDS, AgentProc, Tetherd, closed_with
from websockets.sync.client import connect

from tether.protocol import MSGPACK, PROTOCOL_VERSION, Hello


def test_a_changed_machine_uuid_makes_a_new_agent_and_the_old_one_is_kept_replaced_until_removed(
        tetherd: Tetherd, make_agent: Callable[..., AgentProc]) -> None:
    agent = make_agent("a")
    old_id, old_identity = agent.agent_id, agent.identity()
    _, out = tetherd.ctl("task", "record", "--agent", old_id)
    pending = int(out["task_id"])

    again = subprocess.run(
        [str(BIN / "tether-agent"), "enroll", "--server", tetherd.url, "--key", tetherd.enroll_key,
         "--state-dir", str(agent.state_dir), "--machine-uuid", "re-imaged-machine", "--json"],
        capture_output=True, text=True, env=agent.env, timeout=30)

    assert again.returncode == 0, again.stderr
    enrolled = json.loads(again.stdout)
    new_id = enrolled["agent_id"]
    assert new_id != old_id and enrolled["status"] == "new" and enrolled["replaces"] == old_id
    assert f"replacing agent {old_id}" in again.stderr and f"tetherctl agent rm {old_id}" in again.stderr

    assert [a["agent_id"] for a in tetherctl_agents(tetherd)] == [new_id]
    listed = {a["agent_id"]: a for a in tetherctl_agents(tetherd, "--all")}
    assert listed[old_id]["replaced_by"] == new_id and listed[new_id]["replaced_by"] is None
    code, table = tetherd_table(tetherd, "agents", "--all")
    assert code == 0 and f"replaced by {new_id}" in table
    # The old identity's token is void: its state directory holds the new agent now.
    with connect(tetherd.url) as ws:
        ws.send(MSGPACK.encode(Hello(role="agent", version=PROTOCOL_VERSION, agent_id=old_id,
                                     token=old_identity["token"])))
        _, close_code = closed_with(ws)
    assert close_code == 4010
    # Its delivery waits until an admin removes it; then it is cancelled.
    assert [d["state"] for d in tetherd.show(pending)["deliveries"]] == ["queued"]
    _, removed = tetherd.ctl("agent", "rm", old_id)
    assert [d["state"] for d in tetherd.show(pending)["deliveries"]] == ["cancelled"]
    assert removed["outcome"] == "removed"
    # The machine goes on as the new agent.
    _, out = tetherd.ctl("task", "record", "--agent", new_id)
    done = subprocess.run([str(BIN / "tether-agent"), "once", "--state-dir", str(agent.state_dir),
                           "--commands", f"{COMMANDS}:agent"],
                          capture_output=True, text=True, env=agent.env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert [r["task_id"] for r in agent.runs()] == [int(out["task_id"])]


def test_agents_hides_revoked_agents_unless_all(tetherd: Tetherd, make_agent: Callable[..., AgentProc]) -> None:
    revoked, stays = make_agent("r"), make_agent("s")
    tetherd.ctl("agent", "revoke", revoked.agent_id)
    assert [a["agent_id"] for a in tetherctl_agents(tetherd)] == [stays.agent_id]
    assert {a["agent_id"]: a["revoked"] for a in tetherctl_agents(tetherd, "--all")} == {
        revoked.agent_id: True, stays.agent_id: False}


def test_removing_an_unknown_agent_is_a_clear_error(tetherd: Tetherd) -> None:
    code, err = tetherd.ctl("agent", "rm", "no-such-agent", check=False)
    assert code == 2 and "unknown_agent (1300)" in err and "Traceback" not in err


def tetherctl_agents(tetherd: Tetherd, *extra: str) -> list[dict[str, object]]:
    return tetherd.ctl("agents", *extra)[1]  # type: ignore[no-any-return]


def tetherd_table(tetherd: Tetherd, *args: str) -> tuple[int, str]:
    env = {**tetherd.env, "TETHER_URL": tetherd.url, "TETHER_TOKEN": tetherd.admin_token}
    proc = subprocess.run([str(BIN / "tetherctl"), *args], capture_output=True, text=True, env=env, timeout=60)
    return proc.returncode, proc.stdout + proc.stderr
