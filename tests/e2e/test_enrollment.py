"""Enrollment as an attacker holding an enrollment key tries it (issue 15), and as an operator
re-enrolling tries it (issue 16): nobody takes over an enrolled agent's identity without its
token (a possible clone is approved, merged or removed by an admin), a key bounds the tags,
tags that break the one tag rule are refused, re-enrolling keeps the journal."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness import BIN, AgentProc, Tetherd, closed_with, wait_until
from websockets.sync.client import connect

from tether.protocol import MSGPACK, PROTOCOL_VERSION, Hello, decode_from_daemon
from tether.protocol.frames import Enroll, Error


def raw_enroll(tetherd: Tetherd, **fields: Any) -> tuple[Any, int | None]:
    """One enroll frame sent as a hostile client would: (the error answered, the close code)."""
    with connect(tetherd.url, max_size=None) as ws:
        ws.send(MSGPACK.encode(Enroll(version=PROTOCOL_VERSION, key=tetherd.enroll_key, **fields)))
        return closed_with(ws)


def test_unvalidated_enrollment_tags_are_refused(
    tetherd: Tetherd, make_agent: Callable[..., AgentProc], fault_log: Callable[..., None]
) -> None:
    """15.3: tags that break the rule, or 100,000 of them (which once failed whole group
    commits), are refused 4001 naming the tag or the count; nothing is enrolled."""
    bystander = make_agent("bystander", start=True)
    error, code = raw_enroll(tetherd, machine_uuid="m-hostile-1", tags=["ok", "evil\ntag"])
    assert code == 4001 and error is not None
    assert error.message == ("invalid tag 'evil\\ntag': a tag is 1-64 characters of letters, digits and . _ : -, "
                             "starting with a letter or a digit")
    error, code = raw_enroll(tetherd, machine_uuid="m-hostile-2", tags=[f"t{i}" for i in range(1000)])
    assert code == 4001 and error.message == "that is 1000 tags; an agent carries at most 64"
    # Past the 1,024 names a frame may carry (15.2), refused as it is decoded, before a tag is built.
    error, code = raw_enroll(tetherd, machine_uuid="m-hostile-2", tags=[f"t{i}" for i in range(100_000)])
    assert code == 4001 and error.message.endswith("Expected `array` of length <= 1024 - at `$.tags`")
    assert [a["agent_id"] for a in tetherd.ctl("agents")[1]] == [bystander.agent_id]
    # The agent's own command line refuses such a tag before it talks to anyone.
    proc = subprocess.run([str(BIN / "tether-agent"), "enroll", "--server", tetherd.url, "--key", tetherd.enroll_key,
                           "--tag", "two words", "--state-dir", str(bystander.state_dir.with_name("x"))],
                          capture_output=True, text=True, env=tetherd.env, timeout=30)
    assert proc.returncode == 2 and "invalid tag 'two words': a tag is 1-64 characters" in proc.stderr
    task_id = tetherd.task("record", "--agent", bystander.agent_id)
    assert tetherd.ctl("wait", str(task_id), "--timeout", "30")[0] == 0
    fault_log("Enrollment", "enroll frames with a tag holding a newline, and with 100,000 tags; the agent CLI "
              "given a tag with a space", 3, "refused 4001 naming the tag and the rule or the count (the CLI: "
              "exit 2), no agent enrolled, the bystander agent served")


def machine_uuid_of(agent: AgentProc) -> str:
    return f"test-machine-{agent.name}-{os.getpid()}"  # what the harness enrolls it with


def hello_as(tetherd: Tetherd, agent_id: str, token: str) -> tuple[Any, Any]:
    """A hello with these credentials, as a thief of them would send it: the daemon's first
    answer (welcome or error) and, for an error, the close code."""
    with connect(tetherd.url) as ws:
        ws.send(MSGPACK.encode(Hello(role="agent", version=PROTOCOL_VERSION, agent_id=agent_id, token=token)))
        first = decode_from_daemon(ws.recv(timeout=10))
        if isinstance(first, Error):
            return first, closed_with(ws)[1]
        return first, None


def test_agent_takeover_through_the_machine_uuid_is_refused(
    tetherd: Tetherd, make_agent: Callable[..., AgentProc], tmp_path: Path, env: dict[str, str],
    fault_log: Callable[..., None],
) -> None:
    """15.1: an attacker holding an enrollment key enrolls with a running agent's machine
    UUID. It becomes a new agent, marked a possible clone; the real agent keeps its id and
    token and receives its tasks, the attacker none of them; an admin removes the attacker."""
    real = make_agent("real", start=True)
    attacker = AgentProc("attacker", tmp_path, tetherd, env)
    proc = attacker.enroll(extra=("--machine-uuid", machine_uuid_of(real)))
    assert attacker.agent_id != real.agent_id
    assert json.loads(proc.stdout)["clone_of"] == real.agent_id
    assert f"possible clone of agent {real.agent_id}" in proc.stderr
    attacker.start()
    tasks = [tetherd.task(f"record --n {i}", "--agent", real.agent_id) for i in range(3)]
    for task_id in tasks:
        assert tetherd.ctl("wait", str(task_id), "--timeout", "30")[0] == 0
    assert sorted(r["task_id"] for r in real.runs()) == tasks
    assert attacker.runs() == []
    assert real.proc is not None and real.proc.poll() is None  # never refused
    listed = {a["agent_id"]: a for a in tetherd.ctl("agents")[1]}
    assert listed[attacker.agent_id]["clone_of"] == real.agent_id and listed[real.agent_id]["clone_of"] is None
    table = subprocess.run([str(BIN / "tetherctl"), "agents"], capture_output=True, text=True, timeout=30,
                           env={**env, "TETHER_URL": tetherd.url, "TETHER_TOKEN": tetherd.admin_token}).stdout
    assert f"possible clone of {real.agent_id}" in table

    # The admin removes it: its running delivery is cancelled (the cancel reaches it before
    # its session is closed), its token stops working, it leaves the listing.
    fifo = tmp_path / "gate"
    os.mkfifo(fifo)
    task_id = tetherd.task(f"gate --fifo {fifo}", "--agent", attacker.agent_id)
    with open(fifo, "w") as writer:  # returns once the command is running
        rc, out = tetherd.ctl("agent", "rm", attacker.agent_id)
        assert rc == 0 and out == {"agent_id": attacker.agent_id, "outcome": "removed", "into": None,
                                   "cancelled": 1, "sessions_closed": 1}
        assert attacker.log is not None
        attacker.log.wait_for(r"event=delivery_cancelled .*delivery_id=")
        writer.write("go\n")
    assert attacker.wait_exit() == 3
    assert "4010" in attacker.log.text()
    assert tetherd.show(task_id)["deliveries"][0]["state"] == "cancelled"
    stolen = attacker.identity()
    error, code = hello_as(tetherd, stolen["agent_id"], stolen["token"])
    assert code == 4010 and error.code == 4010
    assert [a["agent_id"] for a in tetherd.ctl("agents")[1]] == [real.agent_id]
    every = {a["agent_id"]: a for a in tetherd.ctl("agents", "--all")[1]}
    assert every[attacker.agent_id]["removed_at"] is not None
    rc, out = tetherd.ctl("task", "record", "--agent", attacker.agent_id, check=False)
    assert rc == 2 and "unknown_agent (1300)" in out
    task_id = tetherd.task("record --after 1", "--agent", real.agent_id)
    assert tetherd.ctl("wait", str(task_id), "--timeout", "30")[0] == 0
    fault_log("Enrollment", "an attacker with an enrollment key enrolls with a running agent's machine UUID, "
              "then is removed by an admin", 1,
              "a new agent marked a possible clone (agents, --json and table); the real agent keeps its id and "
              "token and runs its 4 tasks, the attacker none; removed: its running delivery cancelled (the "
              "cancel reached it), its process stops (4010), its token refused, gone from agents but --all")


def test_a_possible_clone_merged_by_an_admin_takes_over_the_old_identity(
    tetherd: Tetherd, make_agent: Callable[..., AgentProc], tmp_path: Path, env: dict[str, str],
    fault_log: Callable[..., None],
) -> None:
    """15.1: a machine that lost its state directory enrolls again (without proof: a possible
    clone); the admin merges it, and it becomes the old agent: its id and queued tasks."""
    old = make_agent("lost", "web")
    waiting = tetherd.task("record --queued 1", "--agent", old.agent_id)
    reborn = AgentProc("reborn", tmp_path, tetherd, env)
    reborn.enroll(extra=("--machine-uuid", machine_uuid_of(old)))
    reborn.start()
    rc, out = tetherd.ctl("agent", "merge", reborn.agent_id)
    assert rc == 0 and out["outcome"] == "merged" and out["into"] == old.agent_id
    assert reborn.log is not None
    reborn.log.wait_for(rf"event=agent_merged .*agent_id={old.agent_id}")
    assert tetherd.ctl("wait", str(waiting), "--timeout", "30")[0] == 0
    assert [r["task_id"] for r in reborn.runs()] == [waiting]
    assert reborn.status()["agent_id"] == old.agent_id  # kept in its journal
    listed = tetherd.ctl("agents")[1]
    assert [(a["agent_id"], a["online"], a["tags"]) for a in listed] == [(old.agent_id, True, ["web"])]
    stale = old.identity()
    assert hello_as(tetherd, stale["agent_id"], stale["token"])[1] == 4010  # the old token is void
    reborn.kill(signal.SIGTERM)
    fault_log("Enrollment", "a possible clone merged by an admin while it is connected", 1,
              "it reconnects as the old agent (id kept in its journal), runs the task queued for it, the old "
              "token refused 4010")


def enroll_cli(tetherd: Tetherd, state_dir: Path, *args: str, server: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "tether-agent"), "enroll", "--server", server or tetherd.url,
                           "--state-dir", str(state_dir), *args], capture_output=True, text=True,
                          env=tetherd.env, timeout=30)


def test_enrollment_keys_bound_the_tags(tetherd: Tetherd, tmp_path: Path, fault_log: Callable[..., None]) -> None:
    """15.4: an agent gets its key's tags; asking for others is refused unless the key allows it."""
    kiosk = tetherd.ctl("key", "create", "--tag", "kiosk")[1]["key"]
    proc = enroll_cli(tetherd, tmp_path / "a", "--key", kiosk, "--tag", "prod", "--tag", "finance", "--json")
    assert proc.returncode == 1 and proc.stdout == ""
    assert "enrollment refused: enroll_tags_refused (4014): this enrollment key gives the tags kiosk and allows " \
           "no others; finance, prod refused" in proc.stderr
    assert tetherd.ctl("agents")[1] == []
    proc = enroll_cli(tetherd, tmp_path / "a", "--key", kiosk, "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout)["tags"] == ["kiosk"]
    proc = enroll_cli(tetherd, tmp_path / "b", "--key", tetherd.enroll_key, "--tag", "web")  # the first start's key
    assert proc.returncode == 1 and "enroll_tags_refused (4014)" in proc.stderr
    rc, made = tetherd.ctl("key", "create", "--tag", "kiosk", "--allow-requested-tags")
    assert rc == 0 and made["allow_requested_tags"] is True
    proc = enroll_cli(tetherd, tmp_path / "b", "--key", made["key"], "--tag", "web", "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout)["tags"] == ["kiosk", "web"]
    # Re-enrolling (the agent proves itself) adds no tag either.
    proc = enroll_cli(tetherd, tmp_path / "b", "--key", made["key"], "--tag", "web", "--tag", "prod")
    assert proc.returncode == 1 and "keeps its tags (kiosk, web); prod refused" in proc.stderr
    assert {k["key_id"]: k["allow_requested_tags"] for k in tetherd.ctl("key", "list")[1]} == {
        1: False, 2: False, 3: True}
    fault_log("Enrollment", "enrollments asking for tags beyond their key's (a tagged key, the first start's key, "
              "a re-enrollment)", 3, "refused 4014 naming the tags, nothing enrolled, no key use spent; a key "
              "made with --allow-requested-tags grants them")


def test_re_enrolling_keeps_the_journal_and_a_new_url_needs_no_re_enrollment(
    tetherd: Tetherd, make_agent: Callable[..., AgentProc], tmp_path: Path, fault_log: Callable[..., None],
) -> None:
    """16.2: a result tetherd has not committed yet stays through re-enrollment, also when
    the operator names the daemon by another URL; nothing runs twice."""
    agent = make_agent("again")
    agent.start()
    fifo = tmp_path / "gate"
    os.mkfifo(fifo)
    task_id = tetherd.task(f"gate --fifo {fifo}", "--agent", agent.agent_id)
    with open(fifo, "w") as writer:  # running: now tetherd goes away and the command finishes
        tetherd.kill(signal.SIGKILL)
        writer.write("done\n")
    wait_until(lambda: agent.status()["outbox"] == 1, what="the result in the agent's outbox")
    assert agent.kill(signal.SIGTERM) == 0
    tetherd.start()

    proc = agent.enroll(check=False)  # the same URL: the agent proves itself
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["status"] == "existing" and json.loads(proc.stdout)["agent_id"] == agent.agent_id
    assert "existing: same id, token and tags; its journal is kept" in proc.stderr
    assert agent.status()["outbox"] == 1
    other = tetherd.url.replace("127.0.0.1", "localhost")  # the same tetherd, by another name
    proc = agent.enroll(check=False, extra=("--server", other))
    assert proc.returncode == 1
    assert f"tether-agent set-server {other}" in proc.stderr and "1 results not yet committed" in proc.stderr
    assert agent.status()["outbox"] == 1 and agent.status()["server"] == tetherd.url

    agent.start("--server", other)  # stored: the next start uses it too
    assert tetherd.ctl("wait", str(task_id), "--timeout", "30")[0] == 0
    assert tetherd.show(task_id)["deliveries"][0]["result"] == {"gate": "done"}
    assert len(agent.runs()) == 1
    assert agent.status()["server"] == other
    fault_log("Enrollment", "re-enrolling an agent holding a result tetherd has not committed, with the same URL "
              "and with another URL of the same tetherd", 2,
              "the same agent (existing), the journal and outbox kept; the other URL refused naming set-server; "
              "run --server stores it; the result committed, the command ran once")


def test_two_agents_on_one_host_are_two_agents(
    tetherd: Tetherd, tmp_path: Path, env: dict[str, str], fault_log: Callable[..., None],
) -> None:
    """16.3: a second enrollment on the same host into another state directory is another
    agent (the machine identity is per state directory); the first keeps working."""
    agents = [AgentProc(name, tmp_path, tetherd, env) for name in ("first", "second")]
    for agent in agents:
        proc = enroll_cli(tetherd, agent.state_dir, "--key", tetherd.enroll_key, "--json")  # no --machine-uuid
        assert proc.returncode == 0, proc.stderr
        out = json.loads(proc.stdout)
        assert (out["status"], out["clone_of"]) == ("new", "")
        assert f"enrolled as new agent {out['agent_id']}" in proc.stderr
        agent.agent_id = out["agent_id"]
    assert agents[0].agent_id != agents[1].agent_id
    for agent in agents:
        agent.start()
        task_id = tetherd.task("record", "--agent", agent.agent_id)
        assert tetherd.ctl("wait", str(task_id), "--timeout", "30")[0] == 0
    assert all(a.proc is not None and a.proc.poll() is None for a in agents)
    for agent in agents:
        agent.kill(signal.SIGTERM)
    fault_log("Enrollment", "two state directories enrolled on one host, no --machine-uuid", 1,
              "two agents, neither a possible clone, both served")


def test_the_first_start_can_bound_its_enrollment_key(
    tmp_path: Path, env: dict[str, str], fault_log: Callable[..., None],
) -> None:
    """15.14: a first ``tetherd serve --key-uses 1 --key-expires-in 1h`` makes a bounded key."""
    daemon = Tetherd(tmp_path / "bounded", env)
    daemon.extra_args = ["--key-uses", "1", "--key-expires-in", "1h"]
    daemon.start()
    try:
        assert enroll_cli(daemon, tmp_path / "one", "--key", daemon.enroll_key).returncode == 0
        second = enroll_cli(daemon, tmp_path / "two", "--key", daemon.enroll_key)
        assert second.returncode == 1 and "enroll_key_exhausted (4013)" in second.stderr
        [key] = daemon.ctl("key", "list")[1]
        assert key["uses_left"] == 0 and 3599 < key["expires_at"] - key["created_at"] < 3601
    finally:
        daemon.kill(signal.SIGTERM)
    fault_log("Enrollment", "the key printed at first start, bounded with serve --key-uses 1 --key-expires-in 1h",
              1, "it enrolls one agent, then 4013; it expires an hour after it was made")
