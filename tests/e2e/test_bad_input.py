"""Bad input gets a specific error code and message, no traceback, and the daemon keeps
serving everyone else."""

from __future__ import annotations

import json
import signal
import socket
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import msgspec
import pytest
from harness import BIN, TEST_SETTINGS, AgentProc, Tetherd, closed_with
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tether.protocol import JSON, MSGPACK, PROTOCOL_VERSION, Hello, Request
from tether.protocol.codec import decode_from_daemon
from tether.protocol.frames import Ack, Enroll, Result


@contextmanager
def console(tetherd: Tetherd) -> Iterator[ClientConnection]:
    with connect(tetherd.url) as ws:
        ws.send(JSON.encode(Hello(role="console", version=PROTOCOL_VERSION, token=tetherd.admin_token)), text=True)
        assert decode_from_daemon(ws.recv(timeout=10)).__class__.__name__ == "Welcome"
        yield ws


def reply(ws: ClientConnection) -> Any:
    return decode_from_daemon(ws.recv(timeout=10))


def assert_still_serving(tetherd: Tetherd, agent: AgentProc) -> None:
    task_id = tetherd.task("record --still 1", "--agent", agent.agent_id)
    assert tetherd.ctl("wait", str(task_id), "--timeout", "30")[0] == 0
    assert tetherd.log is not None
    assert "Traceback" not in tetherd.log.text()


REPORT = {
    "test_bad_frames_in_a_console_session": (
        "a malformed, unknown-tag, wrongly typed or out-of-place frame in a console session",
        "the registered code (1100-1103) and message; the session stays usable"),
    "test_bad_requests_get_registered_codes": (
        "a console request with an unknown method, bad params or unknown ids, a bad action object",
        "the registered code (1200-1302), ref = the request id"),
    "test_unknown_command_for_an_agent_that_announced_its_commands": (
        "a task for a command its agent does not serve", "1303, naming the commands it serves"),
    "test_tetherctl_reports_bad_input_without_traceback": (
        "tetherctl given bad JSON, an unknown action, an unknown agent to task or list", "exit 2 with the code, no traceback"),
    "test_wrong_or_missing_console_token": ("a console hello with a wrong, empty or missing token", "closed 4010"),
    "test_wrong_agent_token_and_unknown_agent": ("an agent hello with a wrong token, unknown id, no id",
                                                 "closed 4010"),
    "test_first_frame_must_be_hello": ("a first frame that is not hello/enroll, or garbage", "closed 4001"),
    "test_unsupported_protocol_version": ("a hello with protocol version 99", "closed 4002, the message names it"),
    "test_oversized_frame_closes_with_1009": ("a 2 MB frame (limit 1 MiB)", "closed 1009"),
    "test_unknown_and_expired_enrollment_keys": ("an unknown enrollment key; an expired one",
                                                 "closed 4011 / 4012, enroll exits non-zero"),
    "test_second_session_for_the_same_agent_replaces_the_first": (
        "a clone of an agent's identity connects", "the older session is closed 4020 and its agent stops"),
    "test_agent_cannot_report_on_someone_elses_delivery": (
        "an agent posts a result for another agent's delivery, sends a console request",
        "1403 each, the delivery untouched"),
    "test_silent_client_is_closed_after_the_handshake_timeout": (
        "a client that opens the WebSocket and never sends hello", "closed 4003 after handshake_timeout"),
    "test_client_that_never_finishes_the_http_handshake_is_closed": (
        "a TCP client that sends half an HTTP upgrade request and stops", "closed after handshake_timeout"),
    "test_viewer_token_reads_but_cannot_change_anything": ("a viewer token creating and cancelling tasks", "1403"),
}


@pytest.fixture(autouse=True)
def _report(request: pytest.FixtureRequest, fault_log: Callable[..., None]) -> None:
    fault, invariant = REPORT[request.node.originalname]  # each parametrized case is one try
    fault_log("Hostile input", fault, 1, invariant + "; the daemon serves an agent afterwards, no traceback")


@pytest.fixture
def healthy(tetherd: Tetherd, make_agent: Callable[..., AgentProc]) -> Iterator[AgentProc]:
    """An agent that must keep being served through whatever the test throws at tetherd."""
    agent = make_agent("healthy", "web", start=True)
    yield agent
    assert_still_serving(tetherd, agent)


@pytest.mark.parametrize(
    ("payload", "code", "words"),
    [
        (b"\xc1\xff\x00", 1100, "malformed"),
        ("{not json", 1100, "malformed"),
        (JSON.encode({"t": "teleport", "id": 1}).decode(), 1101, "unknown frame"),
        (JSON.encode({"t": "req", "id": "one", "method": "task.get"}).decode(), 1102, "Expected `int`"),
        (JSON.encode({"t": "req", "method": "task.get"}).decode(), 1102, "missing required field `id`"),
        (JSON.encode(Ack(delivery_ids=[1])).decode(), 1103, "unexpected"),
    ],
)
def test_bad_frames_in_a_console_session(
    tetherd: Tetherd, healthy: AgentProc, payload: bytes | str, code: int, words: str
) -> None:
    with console(tetherd) as ws:
        ws.send(payload)
        err = reply(ws)
        assert err.code == code and err.name and words in err.message
        assert "Traceback" not in err.message
        ws.send(JSON.encode(Request(id=7, method="agents.list")), text=True)  # the session is still usable
        res = reply(ws)
        assert res.id == 7 and any(a["agent_id"] == healthy.agent_id for a in res.result)


@pytest.mark.parametrize(
    ("method", "params", "code"),
    [
        ("task.teleport", {}, 1200),
        ("task.create", {"command": "record", "agent": "x", "tag": "y"}, 1201),
        ("task.create", {"command": "record", "all": True, "ttl": -5}, 1201),
        ("task.create", {"command": "record", "all": True, "priority": 9}, 1201),
        ("task.create", {"command": "record", "all": True, "tll": 5}, 1201),
        ("task.create", {"command": "record", "agent": "no-such-agent"}, 1300),
        ("task.list", {"agent": "no-such-agent"}, 1300),
        ("task.get", {"task_id": 999_999}, 1302),
        ("task.cancel", {"task_id": 999_999}, 1302),
        ("tag.add", {"agent_id": "no-such-agent", "tag": "x"}, 1300),
        ("action", {"action": "nuke"}, 1202),
        ("action", {"action": "task"}, 1202),
        ("action", {"action": "list", "sensor": "x"}, 1202),
    ],
)
def test_bad_requests_get_registered_codes(
    tetherd: Tetherd, healthy: AgentProc, method: str, params: dict[str, Any], code: int
) -> None:
    with console(tetherd) as ws:
        ws.send(JSON.encode(Request(id=3, method=method, params=params)), text=True)
        err = reply(ws)
        assert err.code == code, err
        assert err.ref == 3
        assert err.message


def test_unknown_command_for_an_agent_that_announced_its_commands(tetherd: Tetherd, healthy: AgentProc) -> None:
    rc, out = tetherd.ctl("task", "teleport --to mars", "--agent", healthy.agent_id, check=False)
    assert rc == 2
    assert "unknown_command (1303)" in out and "record" in out


def test_tetherctl_reports_bad_input_without_traceback(tetherd: Tetherd, healthy: AgentProc) -> None:
    rc, out = tetherd.ctl("action", "{not json", check=False)
    assert rc == 2 and "Traceback" not in out
    rc, out = tetherd.ctl("action", json.dumps({"action": "nuke"}), check=False)
    assert rc == 2 and "invalid_action (1202)" in out
    rc, out = tetherd.ctl("task", "record", "--agent", "nobody", check=False)
    assert rc == 2 and "unknown_agent (1300)" in out
    rc, out = tetherd.ctl("tasks", "--agent", "BOGUS", check=False)
    assert rc == 2 and "unknown_agent (1300)" in out
    rc, out = tetherd.ctl("action", json.dumps({"action": "list", "sid": "BOGUS"}), check=False)
    assert rc == 2 and "unknown_agent (1300)" in out


@pytest.mark.parametrize("token", ["", "tta_wrong"])
def test_wrong_or_missing_console_token(tetherd: Tetherd, healthy: AgentProc, token: str) -> None:
    with connect(tetherd.url) as ws:
        ws.send(JSON.encode(Hello(role="console", version=PROTOCOL_VERSION, token=token)), text=True)
        err, code = closed_with(ws)
    assert code == 4010 and err.code == 4010
    with connect(tetherd.url) as ws:  # no token field at all
        ws.send(JSON.encode({"t": "hello", "role": "console", "version": PROTOCOL_VERSION}).decode())
        err, code = closed_with(ws)
    assert code == 4010


def test_wrong_agent_token_and_unknown_agent(tetherd: Tetherd, healthy: AgentProc) -> None:
    for agent_id, token in ((healthy.agent_id, "tag_wrong"), ("0000000000000000", "tag_x"), (None, "")):
        with connect(tetherd.url) as ws:
            ws.send(MSGPACK.encode(Hello(role="agent", version=PROTOCOL_VERSION, token=token, agent_id=agent_id)))
            err, code = closed_with(ws)
        assert code == 4010 and err.code == 4010


def test_first_frame_must_be_hello(tetherd: Tetherd, healthy: AgentProc) -> None:
    with connect(tetherd.url) as ws:
        ws.send(JSON.encode(Request(id=1, method="agents.list")), text=True)
        err, code = closed_with(ws)
    assert code == 4001 and "hello" in err.message
    with connect(tetherd.url) as ws:
        ws.send(b"\x00garbage")
        err, code = closed_with(ws)
    assert code == 4001


def test_unsupported_protocol_version(tetherd: Tetherd, healthy: AgentProc) -> None:
    with connect(tetherd.url) as ws:
        ws.send(JSON.encode(Hello(role="console", version=99, token=tetherd.admin_token)), text=True)
        err, code = closed_with(ws)
    assert code == 4002 and "99" in err.message


def test_oversized_frame_closes_with_1009(tetherd: Tetherd, healthy: AgentProc) -> None:
    with console(tetherd) as ws:
        huge = JSON.encode(Request(id=1, method="task.create", params={"command": "x" * 2_000_000})).decode()
        with pytest.raises(ConnectionClosed):
            ws.send(huge)
            ws.recv(timeout=10)
        assert ws.protocol.close_rcvd is not None and ws.protocol.close_rcvd.code == 1009


def test_unknown_and_expired_enrollment_keys(tetherd: Tetherd, healthy: AgentProc, make_agent: Any) -> None:
    with connect(tetherd.url) as ws:
        ws.send(MSGPACK.encode(Enroll(version=PROTOCOL_VERSION, key="AAAAA-AAAAA-AAAAA-AAAAA-AAAAA")))
        err, code = closed_with(ws)
    assert code == 4011 and err.code == 4011
    out = subprocess.run(
        [str(BIN / "tetherd"), "key", "create", "--data-dir", str(tetherd.data_dir), "--expires-in", "0.5", "--json"],
        capture_output=True, text=True, check=True, env=tetherd.env,
    ).stdout
    key = json.loads(out)["key"]
    time.sleep(0.6)  # let the key's own expiry time pass (a wall-clock fact, not synchronisation)
    agent = AgentProc("late", tetherd.data_dir.parent, tetherd, tetherd.env)
    proc = agent.enroll(key=key, check=False)
    assert proc.returncode != 0
    assert "enroll_key_expired" in proc.stderr or "4012" in proc.stderr


def test_second_session_for_the_same_agent_replaces_the_first(tetherd: Tetherd, healthy: AgentProc) -> None:
    assert "token" not in healthy.status()  # the status command never shows the secret
    # A clone of the endpoint (same identity, another state directory) connects: it wins,
    # and the older session is closed with 4020 and its agent stops, saying why.
    second = AgentProc("clone", tetherd.data_dir.parent, tetherd, tetherd.env)
    second.state_dir.mkdir()
    with closing(sqlite3.connect(healthy.state_dir / "journal.sqlite")) as src, \
            closing(sqlite3.connect(second.state_dir / "journal.sqlite")) as dst:
        src.backup(dst)
    second.agent_id = healthy.agent_id
    second.start()
    assert healthy.wait_exit() != 0
    assert healthy.log is not None
    healthy.log.wait_for(r"4020|replaced")
    healthy.proc, healthy.log = second.proc, second.log  # the fixture checks the survivor still works


def test_agent_cannot_report_on_someone_elses_delivery(
    tetherd: Tetherd, healthy: AgentProc, make_agent: Callable[..., AgentProc]
) -> None:
    other = make_agent("other")
    task_id = tetherd.task("record", "--agent", other.agent_id)
    delivery_id = tetherd.show(task_id)["deliveries"][0]["delivery_id"]
    healthy.kill(signal.SIGKILL)
    ident = healthy.identity()
    with connect(tetherd.url) as ws:
        ws.send(MSGPACK.encode(Hello(role="agent", version=PROTOCOL_VERSION, token=ident["token"],
                                     agent_id=healthy.agent_id)))
        assert decode_from_daemon(ws.recv(timeout=10)).__class__.__name__ == "Welcome"
        ws.send(MSGPACK.encode(Result(delivery_id=delivery_id, ok=True, output=msgspec.Raw(MSGPACK.encode_value(1)))))
        frame = reply(ws)
        while frame.__class__.__name__ != "Error":
            frame = reply(ws)
        assert frame.code == 1403 and frame.ref == delivery_id
        ws.send(MSGPACK.encode(Request(id=5, method="agents.list")))
        frame = reply(ws)
        assert frame.code == 1403
    assert tetherd.show(task_id)["deliveries"][0]["state"] == "queued"
    healthy.start()


def test_silent_client_is_closed_after_the_handshake_timeout(tmp_path: Path, env: dict[str, str]) -> None:
    daemon = Tetherd(tmp_path / "data", env, settings={**TEST_SETTINGS, "handshake_timeout": 0.5})
    daemon.start()
    try:
        with connect(daemon.url) as ws:
            started = time.monotonic()
            err, code = closed_with(ws)
        assert code == 4003 and err.code == 4003
        assert time.monotonic() - started < 5
    finally:
        daemon.kill(signal.SIGTERM)


def test_client_that_never_finishes_the_http_handshake_is_closed(tmp_path: Path, env: dict[str, str]) -> None:
    daemon = Tetherd(tmp_path / "data", env, settings={**TEST_SETTINGS, "handshake_timeout": 0.5})
    daemon.start()
    try:
        with socket.create_connection(("127.0.0.1", daemon.port), timeout=10) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n")  # and no more
            started = time.monotonic()
            while sock.recv(4096):  # tetherd may answer before closing; EOF is the close
                pass
        assert time.monotonic() - started < 5
        assert daemon.ctl("agents")[0] == 0
    finally:
        daemon.kill(signal.SIGTERM)


def test_viewer_token_reads_but_cannot_change_anything(tetherd: Tetherd, healthy: AgentProc) -> None:
    out = subprocess.run(
        [str(BIN / "tetherd"), "token", "create", "--data-dir", str(tetherd.data_dir), "--role", "viewer", "--json"],
        capture_output=True, text=True, check=True, env=tetherd.env,
    ).stdout
    viewer = json.loads(out)["token"]
    admin = tetherd.admin_token
    tetherd.admin_token = viewer
    try:
        rc, listed = tetherd.ctl("agents")
        assert rc == 0 and any(a["agent_id"] == healthy.agent_id for a in listed)
        rc, err = tetherd.ctl("task", "record", "--agent", healthy.agent_id, check=False)
        assert rc == 2 and "forbidden (1403)" in err
        rc, err = tetherd.ctl("untask", "--agent", healthy.agent_id, check=False)
        assert rc == 2 and "forbidden (1403)" in err
    finally:
        tetherd.admin_token = admin
