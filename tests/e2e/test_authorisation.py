"""Who may do what: token roles, revocation that takes effect on open sessions, and
secrets that are stored hashed and never logged. (An agent reporting on another agent's
delivery or sending console requests is in test_bad_input.py.)"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import AgentProc, Tetherd, closed_with
from websockets.asyncio.client import connect as async_connect
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tether.console import ConsoleClient
from tether.protocol import MSGPACK, PROTOCOL_VERSION, Enroll, Enrolled, Hello, Request, Welcome
from tether.protocol.codec import decode_from_daemon
from tether.protocol.frames import Error, Response


def as_token(tetherd: Tetherd, token: str, *args: str) -> tuple[int, Any]:
    saved, tetherd.admin_token = tetherd.admin_token, token
    try:
        return tetherd.ctl(*args, check=False)
    finally:
        tetherd.admin_token = saved


def new_token(tetherd: Tetherd, role: str) -> dict[str, Any]:
    rc, made = tetherd.ctl("token", "create", "--role", role, "--label", f"{role} for a test")
    assert rc == 0 and made["role"] == role and made["token"].startswith("tta_")
    return made  # type: ignore[no-any-return]


@pytest.fixture
def console_session(tetherd: Tetherd) -> Iterator[Callable[[str], ClientConnection]]:
    opened: list[Any] = []

    def open_(token: str) -> ClientConnection:
        cm = connect(tetherd.url)
        ws = cm.__enter__()
        opened.append(cm)
        ws.send(MSGPACK.encode(Hello(role="console", version=PROTOCOL_VERSION, token=token)))
        assert type(decode_from_daemon(ws.recv(timeout=10))).__name__ == "Welcome"
        return ws

    yield open_
    for cm in opened:
        cm.__exit__(None, None, None)


def closed_by_daemon(ws: ClientConnection, timeout: float = 5.0) -> tuple[Error | None, int | None, float]:
    started = time.monotonic()
    error, code = closed_with(ws, timeout)
    return error, code, time.monotonic() - started


@pytest.mark.parametrize(
    ("role", "allowed"),
    [
        ("viewer", {"agents", "tasks"}),
        ("operator", {"agents", "tasks", "task", "untask", "schedule"}),
        ("admin", {"agents", "tasks", "task", "untask", "schedule", "token", "key", "agent"}),
    ],
)
def test_each_role_may_call_what_it_should_and_nothing_more(
    tetherd: Tetherd, make_agent: Callable[..., AgentProc], role: str, allowed: set[str], fault_log: Callable[..., None]
) -> None:
    agent = make_agent("target")
    token = new_token(tetherd, role)["token"]
    attempts: dict[str, tuple[str, ...]] = {
        "agents": ("agents",),
        "tasks": ("tasks",),
        "task": ("task", "record", "--agent", agent.agent_id),
        "untask": ("untask", "--agent", agent.agent_id),
        "schedule": ("schedule", "add", f"s-{role}", "record", "--every", "1h", "--agent", agent.agent_id),
        "token": ("token", "create", "--role", "viewer"),
        "key": ("key", "create", "--tag", "x"),
        "agent": ("agent", "revoke", agent.agent_id),
    }
    for what, args in attempts.items():
        rc, out = as_token(tetherd, token, *args)
        if what in allowed:
            assert rc == 0, (role, what, out)
        else:
            assert rc == 2 and "forbidden (1403)" in out, (role, what, out)
    # Listing credentials is an admin's business too.
    rc, out = as_token(tetherd, token, "token", "list")
    assert (rc == 0) == (role == "admin"), out
    fault_log("Authorisation", "each role (viewer, operator, admin) calling 8 kinds of command", len(attempts) + 1,
              "allowed ones succeed, the others get 1403")


def test_a_revoked_admin_token_closes_its_open_sessions_at_once(
    tetherd: Tetherd, console_session: Callable[[str], ClientConnection], fault_log: Callable[..., None]
) -> None:
    operator = new_token(tetherd, "operator")
    other = new_token(tetherd, "operator")
    doomed = [console_session(operator["token"]) for _ in range(2)]
    survivor = console_session(other["token"])
    rc, out = tetherd.ctl("token", "revoke", str(operator["token_id"]))
    assert rc == 0 and out == {"revoked": True, "sessions_closed": 2}
    for ws in doomed:
        error, code, took = closed_by_daemon(ws)
        assert code == 4010 and error is not None and error.code == 4010
        assert f"admin token {operator['token_id']} was revoked" in error.message
        assert took < 2.0
    survivor.send(MSGPACK.encode(Request(id=1, method="agents.list", params={})))
    assert isinstance(decode_from_daemon(survivor.recv(timeout=10)), Response)
    rc, out = as_token(tetherd, operator["token"], "agents")
    assert rc == 3 and "unauthorized (4010)" in out
    listed = {t["token_id"]: t for t in tetherd.ctl("token", "list")[1]}
    assert listed[operator["token_id"]]["revoked_at"] is not None
    assert all(t["token"] == "" for t in listed.values())
    rc, out = tetherd.ctl("token", "revoke", str(operator["token_id"]))
    assert rc == 0 and out["revoked"] is False
    rc, out = tetherd.ctl("token", "revoke", "9999", check=False)
    assert rc == 2 and "unknown_token (1308)" in out
    fault_log("Authorisation", "an admin token revoked while 2 sessions use it", 1,
              "both closed 4010 within 2 s, another token's session untouched, the token refused from then on")


def test_revoking_your_own_token_answers_then_closes(
    tetherd: Tetherd, console_session: Callable[[str], ClientConnection], fault_log: Callable[..., None]
) -> None:
    admin = new_token(tetherd, "admin")
    ws = console_session(admin["token"])
    ws.send(MSGPACK.encode(Request(id=9, method="token.revoke", params={"token_id": admin["token_id"]})))
    answer = decode_from_daemon(ws.recv(timeout=10))
    assert isinstance(answer, Response) and answer.id == 9 and answer.result["sessions_closed"] == 1
    _, code, _ = closed_by_daemon(ws)
    assert code == 4010
    fault_log("Authorisation", "a session revoking its own token", 1, "the answer arrives, then 4010")


def test_the_last_admin_token_cannot_be_revoked(tetherd: Tetherd, fault_log: Callable[..., None]) -> None:
    initial = [t for t in tetherd.ctl("token", "list")[1] if t["role"] == "admin"]
    assert len(initial) == 1
    rc, out = tetherd.ctl("token", "revoke", str(initial[0]["token_id"]), check=False)
    assert rc == 2 and "last_admin_token (1310)" in out
    assert tetherd.ctl("agents")[0] == 0
    fault_log("Authorisation", "revoking the last admin token", 1, "refused 1310, the token still works")


def test_a_revoked_agent_is_cut_off_at_once_and_stops(
    tetherd: Tetherd, make_agent: Callable[..., AgentProc], fault_log: Callable[..., None]
) -> None:
    agent = make_agent("revoked", start=True)
    stolen = agent.identity()
    rc, out = tetherd.ctl("agent", "revoke", agent.agent_id)
    assert rc == 0 and out == {"revoked": True, "sessions_closed": 1}
    assert agent.wait_exit(timeout=15) != 0
    assert agent.log is not None and "4010" in agent.log.text()
    # Nobody gets in with its token any more, and tasks for it stay queued.
    with connect(tetherd.url) as ws:
        ws.send(MSGPACK.encode(Hello(role="agent", version=PROTOCOL_VERSION, agent_id=stolen["agent_id"],
                                     token=stolen["token"])))
        error, code, _ = closed_by_daemon(ws)
    assert code == 4010 and error is not None
    task_id = tetherd.task("record", "--agent", agent.agent_id)
    assert tetherd.show(task_id)["deliveries"][0]["state"] == "queued"
    assert agent.agent_id not in {a["agent_id"] for a in tetherd.ctl("agents")[1]}  # issue 19.4: --all shows it
    listed = {a["agent_id"]: a for a in tetherd.ctl("agents", "--all")[1]}
    assert listed[agent.agent_id]["revoked"] is True and listed[agent.agent_id]["online"] is False
    assert tetherd.ctl("agent", "revoke", agent.agent_id)[1]["revoked"] is False
    fault_log("Authorisation", "an agent revoked while its session is open; its stolen token reused", 1,
              "session closed 4010, the agent stops, the token refused 4010, its tasks stay queued")


def test_a_revoked_enrollment_key_enrolls_no_one(
    tetherd: Tetherd, tmp_path: Path, env: dict[str, str], fault_log: Callable[..., None]
) -> None:
    rc, key = tetherd.ctl("key", "create", "--tag", "lab", "--uses", "3", "--expires-in", "1h")
    assert rc == 0 and key["tags"] == ["lab"] and key["uses_left"] == 3
    first = AgentProc("first", tmp_path, tetherd, env)
    first.enroll(key=key["key"])
    assert tetherd.ctl("key", "revoke", str(key["key_id"]))[1]["revoked"] is True
    second = AgentProc("second", tmp_path, tetherd, env)
    proc = second.enroll(key=key["key"], check=False)
    assert proc.returncode != 0 and "enroll_key_unknown" in proc.stderr
    listed = {k["key_id"]: k for k in tetherd.ctl("key", "list")[1]}
    assert listed[key["key_id"]]["revoked_at"] is not None and listed[key["key_id"]]["uses_left"] == 2
    assert all(k["key"] == "" for k in listed.values())
    # The agent it enrolled before keeps working.
    first.start()
    task_id = tetherd.task("record", "--agent", first.agent_id)
    assert tetherd.ctl("wait", str(task_id), "--timeout", "30")[0] == 0
    first.kill(signal.SIGKILL)
    fault_log("Authorisation", "enrolling with a revoked key", 1,
              "refused 4011; the agent enrolled with it before keeps working")


def test_secrets_are_stored_hashed_and_never_logged(
    tetherd: Tetherd, make_agent: Callable[..., AgentProc], fault_log: Callable[..., None]
) -> None:
    agent = make_agent("secretive", start=True)
    token = new_token(tetherd, "viewer")["token"]
    key = tetherd.ctl("key", "create")[1]["key"]
    as_token(tetherd, token, "agents")
    as_token(tetherd, token + "wrong", "agents")  # a failed login logs nothing of what was tried
    secrets = {"initial admin token": tetherd.admin_token, "enrollment key": tetherd.enroll_key,
               "agent token": agent.identity()["token"], "new token": token, "new key": key}
    tetherd.kill(signal.SIGTERM)  # checkpoints the WAL into the file
    assert tetherd.log is not None
    logged = tetherd.log.text() + (agent.log.text() if agent.log else "")
    stored = b"".join(p.read_bytes() for p in tetherd.data_dir.glob("tether.sqlite*"))
    for what, secret in secrets.items():
        assert secret not in logged, f"the {what} is in a log"
        assert secret.encode() not in stored, f"the {what} is stored in the clear"
        assert secret[:12].encode() not in stored
    fault_log("Authorisation", "5 secrets (admin tokens, enrollment keys, an agent token) looked for in the "
              "logs and the database file", len(secrets), "none found, in full or in part")


ROUNDS, LOGINS = 12, 24
"""Revocation race: rounds, and agent logins in flight around each revoke."""


async def _login(ws: Any, agent_id: str, token: str) -> Any:
    """Log an agent in on an open connection: the connection if it was welcomed, else None."""
    await ws.send(MSGPACK.encode(Hello(role="agent", version=PROTOCOL_VERSION, agent_id=agent_id, token=token)))
    try:
        if isinstance(decode_from_daemon(await ws.recv()), Welcome):
            return ws
    except ConnectionClosed:
        pass
    await ws.close()
    return None


async def test_revocation_races_a_login_in_flight(tetherd: Tetherd, fault_log: Callable[..., None]) -> None:
    """15.5: agent logins race its revocation (their hellos sent with the revoke); every
    session that was welcomed is closed within a round trip of the revoke's answer."""
    survived: list[int] = []
    async with ConsoleClient(tetherd.url, tetherd.admin_token) as console:
        for round_ in range(ROUNDS):
            key = (await console.call("key.create", {"uses": 1}))["key"]
            enrolled = await _enroll(tetherd.url, key, f"race-{round_}")
            connections = await asyncio.gather(*(async_connect(tetherd.url) for _ in range(LOGINS)))
            revoke = asyncio.create_task(console.call("agent.revoke", {"agent_id": enrolled.agent_id}))
            logins = [asyncio.create_task(_login(ws, enrolled.agent_id, enrolled.token)) for ws in connections]
            await revoke
            sessions = [ws for ws in await asyncio.gather(*logins) if ws is not None]
            for ws in sessions:
                try:
                    async with asyncio.timeout(2.0):  # far above one round trip on loopback
                        await ws.wait_closed()
                except TimeoutError:
                    survived.append(round_)
                    await ws.close()
    assert survived == [], f"a revoked agent's session outlived the revoke in rounds {survived}"
    fault_log("Authorisation", f"{LOGINS} logins of an agent in flight while it is revoked", ROUNDS,
              "every session welcomed is closed within 2 s of the revoke's answer")


async def _enroll(url: str, key: str, machine_uuid: str) -> Enrolled:
    async with async_connect(url) as ws:
        await ws.send(MSGPACK.encode(Enroll(version=PROTOCOL_VERSION, key=key, machine_uuid=machine_uuid)))
        answer = decode_from_daemon(await ws.recv())
    assert isinstance(answer, Enrolled), answer
    return answer
