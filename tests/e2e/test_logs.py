"""What tetherd and the agent write to their logs: one format for both, one line per
event, and values from peers that cannot forge a line or a field (issue 15.8)."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

from harness import BIN, AgentProc, Tetherd
from websockets.sync.client import connect

from tether.protocol import MSGPACK, PROTOCOL_VERSION
from tether.protocol.codec import decode_from_daemon
from tether.protocol.frames import Enroll
from tether.protocol.logfmt import parse

FORGED = "web-01\nts=2020-01-01T00:00:00.000Z level=error logger=tether.rpc event=agent_revoked agent_id=victim"


def test_a_hostname_with_a_newline_cannot_forge_a_log_line(tetherd: Tetherd) -> None:
    assert tetherd.log is not None
    with connect(tetherd.url) as ws:
        ws.send(MSGPACK.encode(Enroll(version=PROTOCOL_VERSION, key=tetherd.enroll_key, hostname=FORGED,
                                      machine_uuid="m-forger")))
        enrolled = decode_from_daemon(ws.recv(timeout=10))
    m = tetherd.log.wait_for(r"event=agent_enrolled .*")
    assert parse(m.group(0))["hostname"] == FORGED
    assert parse(m.group(0))["agent_id"] == enrolled.agent_id  # type: ignore[union-attr]
    assert not [line for line in tetherd.log.lines if "event=agent_revoked" in line and "agent_enrolled" not in line]


def test_tetherd_and_the_agent_write_the_same_line_format(tetherd: Tetherd,
                                                          make_agent: Callable[..., AgentProc]) -> None:
    agent = make_agent("a", start=True)
    assert tetherd.log is not None and agent.log is not None
    tetherd.log.wait_for("event=session_open role=agent")
    fields = ("ts", "level", "logger", "event")
    for line in (tetherd.log.wait_for("event=listening.*").string, agent.log.wait_for("event=session_open.*").string):
        parsed = parse(line)
        assert list(parsed)[:4] == list(fields), line
        assert parsed["ts"].endswith("Z") and parsed["level"] == "info", line


def test_serve_json_logs_json_lines(tmp_path: Path, env: dict[str, str]) -> None:
    proc = subprocess.Popen([str(BIN / "tetherd"), "--json", "serve", "--data-dir", str(tmp_path / "data"),
                             "--listen", "127.0.0.1:0"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stderr is not None and proc.stdout is not None
        listening = json.loads(proc.stderr.readline())
        assert listening["event"] == "listening" and listening["data_dir"] == str(tmp_path / "data")
        assert listening["ts"].endswith("Z") and listening["level"] == "info"
        creds = json.loads(proc.stdout.readline())
        assert creds["url"] == listening["url"] and creds["admin_token"].startswith("tta_")
    finally:
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=30)
    assert [json.loads(line)["event"] for line in rest.splitlines()] == ["draining", "stopped"]
