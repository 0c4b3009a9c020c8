"""Alerts end to end: deduplicated by tetherd (10,000 copies, one row), a flood bounded, bad
alerts refused with nothing stored, and ``tether-agent alert`` from a script, with and
without a running agent. Real tetherd, real agent processes, raw agent sessions where the
test plays a hostile agent."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
from harness import BIN, TEST_SETTINGS, AgentProc, Tetherd, raw_agent_session, wait_until
from websockets.sync.client import ClientConnection

from tether.protocol import MSGPACK, decode_from_daemon
from tether.protocol.alerts import AlertBody
from tether.protocol.frames import Alert, Alerted, Batch, Error


def taken(ws: ClientConnection, count: int) -> list[Any]:
    """Read until ``alerted`` frames have named ``count`` alerts; every frame read."""
    seen: list[Any] = []
    named = 0
    while named < count:
        frame = decode_from_daemon(ws.recv(timeout=30))
        frames = [frame] if not isinstance(frame, Batch) else [decode_from_daemon(f) for f in frame.frames]
        for f in frames:
            seen.append(f)
            if isinstance(f, Alerted):
                named += len(f.ids)
            if isinstance(f, Error) and f.ref is not None:
                named += 1
    return seen


def send_alerts(ws: ClientConnection, alerts: list[Alert]) -> None:
    for start in range(0, len(alerts), 1000):
        ws.send(MSGPACK.encode(Batch(frames=[msgspec.Raw(MSGPACK.encode(a)) for a in alerts[start:start + 1000]])))


def alerts(tetherd: Tetherd, *args: str) -> dict[str, Any]:
    return tetherd.ctl("alerts", *args)[1]  # type: ignore[no-any-return]


def rows(tetherd: Tetherd) -> int:
    db = sqlite3.connect(tetherd.data_dir / "tether.sqlite")
    try:
        return int(db.execute("SELECT count(*) FROM alerts").fetchone()[0])
    finally:
        db.close()


def test_ten_thousand_copies_of_one_alert_are_one_row_counted_ten_thousand(tmp_path: Path, env: dict[str, str]) -> None:
    tetherd = Tetherd(tmp_path / "data", env, settings={**TEST_SETTINGS, "alert_burst": 20_000})
    tetherd.start()
    try:
        with raw_agent_session(tetherd) as (ws, agent_id):
            body = AlertBody(kind="av", name="EICAR-Test-File", path="/tmp/eicar.com", hash="275a021b")
            send_alerts(ws, [Alert(id=i, alert=body, raised_at=float(i)) for i in range(1, 10_001)])
            taken(ws, 10_000)
        listed = alerts(tetherd)
        (alert,) = listed["alerts"]
        assert (alert["count"], alert["agent_id"], alert["name"], alert["path"]) == \
            (10_000, agent_id, "EICAR-Test-File", "/tmp/eicar.com")
        assert alert["raised_at"] == 10_000.0 and listed["dropped"] == []  # the latest copy
        assert rows(tetherd) == 1
        text = subprocess.run([str(BIN / "tetherctl"), "alerts"], capture_output=True, text=True, check=True,
                              env={**env, "TETHER_URL": tetherd.url, "TETHER_TOKEN": tetherd.admin_token}).stdout
        assert "EICAR-Test-File" in text and "10000" in text
    finally:
        tetherd.kill()


def test_a_flood_from_one_agent_is_counted_not_stored(tetherd: Tetherd) -> None:
    with raw_agent_session(tetherd) as (ws, agent_id):  # the default limit: 120 at once
        send_alerts(ws, [Alert(id=i, alert=AlertBody(kind="flood", name=f"n{i}")) for i in range(500)])
        taken(ws, 500)
    with raw_agent_session(tetherd, "quiet") as (ws, quiet):  # another agent is not slowed by it
        send_alerts(ws, [Alert(id=1, alert=AlertBody(kind="flood", name="mine"))])
        taken(ws, 1)
    listed = alerts(tetherd, "--limit", "1000")
    mine = [a for a in listed["alerts"] if a["agent_id"] == agent_id]
    assert 120 <= len(mine) < 130  # the burst, and what the rate gave back meanwhile
    assert [(d["agent_id"], d["dropped"]) for d in listed["dropped"]] == [(agent_id, 500 - len(mine))]
    assert [a["name"] for a in listed["alerts"] if a["agent_id"] == quiet] == ["mine"]
    assert rows(tetherd) == len(mine) + 1


def test_bad_alerts_are_refused_and_nothing_is_stored(tetherd: Tetherd) -> None:
    with raw_agent_session(tetherd) as (ws, _):
        ws.send(msgspec.msgpack.encode({"t": "alert", "id": 1, "alert": {"kind": "av"}}))
        error = decode_from_daemon(ws.recv(timeout=10))
        assert isinstance(error, Error) and error.code == 1102 and "missing required field `name`" in error.message
        ws.send(msgspec.msgpack.encode({"t": "alert", "id": 2, "alert": {"kind": "av", "name": "x" * 257}}))
        error = decode_from_daemon(ws.recv(timeout=10))
        assert isinstance(error, Error) and error.code == 1102 and "length <= 256" in error.message
        big = Alert(id=3, alert=AlertBody(kind="av", name="big", details={"blob": "x" * 20_000}))
        ws.send(MSGPACK.encode(big))
        error = decode_from_daemon(ws.recv(timeout=10))
        assert isinstance(error, Error) and (error.code, error.ref) == (1104, 3)
        assert "details take" in error.message
    assert alerts(tetherd) == {"alerts": [], "dropped": []}
    assert rows(tetherd) == 0


def agent_alert(agent: AgentProc, text: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "tether-agent"), "alert", "--state-dir", str(agent.state_dir), "--json", text,
                           *extra], capture_output=True, text=True, env=agent.env, timeout=60)


def outbox(agent: AgentProc) -> int:
    db = sqlite3.connect(agent.state_dir / "journal.sqlite")
    try:
        return int(db.execute("SELECT count(*) FROM alerts").fetchone()[0])
    finally:
        db.close()


def test_tether_agent_alert_refuses_bad_input_and_keeps_nothing(make_agent: Callable[..., AgentProc]) -> None:
    a = make_agent("a")
    for text, message in [
        ('{"kind": "script"}', "invalid alert: Object missing required field `name`"),
        ('{"kind": "script", "name": "' + "n" * 300 + '"}', "length <= 256 - at `$.name`"),
        ('{"kind": "script", "name": "x", "sevrity": "high"}', "unknown field 'sevrity'"),
        ('{"kind": "script", "name": "x", "details": {"b": "' + "x" * 20_000 + '"}}', "details take"),
        ("{kind: script}", "--json is not valid JSON"),
    ]:
        proc = agent_alert(a, text)
        assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert outbox(a) == 0


def test_tether_agent_alert_from_a_script_with_and_without_a_running_agent(
    tetherd: Tetherd, make_agent: Callable[..., AgentProc]
) -> None:
    a = make_agent("a")
    alert = json.dumps({"kind": "integrity", "name": "sshd_config changed", "path": "/etc/ssh/sshd_config"})
    proc = agent_alert(a, alert)  # no agent runs: it hands the alert over itself
    assert proc.returncode == 0 and "taken by tetherd" in proc.stderr, proc.stderr
    assert outbox(a) == 0
    a.start()
    proc = agent_alert(a, alert)  # the running agent sends it
    assert proc.returncode == 0 and "the running agent" in proc.stderr, proc.stderr
    wait_until(lambda: alerts(tetherd)["alerts"] and alerts(tetherd)["alerts"][0]["count"] == 2,
               what="the second copy counted")
    wait_until(lambda: outbox(a) == 0, what="the agent's journal to forget it")
    (listed,) = alerts(tetherd)["alerts"]
    assert (listed["agent_id"], listed["kind"], listed["path"]) == (a.agent_id, "integrity", "/etc/ssh/sshd_config")
    acked = tetherd.ctl("alerts", "ack", str(listed["alert_id"]))[1]
    assert acked["acked_count"] == 2 and acked["acked_at"] is not None
    shown = tetherd.ctl("alerts", "show", str(listed["alert_id"]))[1]
    assert shown == acked
    rc, err = tetherd.ctl("alerts", "show", "999", check=False)
    assert rc == 2 and "unknown_alert (1320): no alert 999" in err
