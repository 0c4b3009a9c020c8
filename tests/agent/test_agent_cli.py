"""``tether-agent`` as a user runs it: real processes against the fake daemon."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tether.agent import Identity, Journal
from tether.agent.cli import CliError, default_state_dir, load_agent, main
from tether.agent.host import agent_machine_uuid, machine_uuid
from tether.agent.journal import RESTARTED_WHILE_RUNNING
from tether.protocol import Ack, Committed, Enrolled, Error, ErrorCode, Progress, Result, unpack

if TYPE_CHECKING:
    from conftest import FakeDaemon

AGENT = (sys.executable, "-m", "tether.agent.cli")
PROCESS_TIMEOUT = 20.0

COMMANDS = """
import asyncio
from tether.agent import Agent

agent = Agent("site")

@agent.command("hello")
async def hello(args):
    return {"hi": args.get("name")}

@agent.command("hang")
async def hang(args):
    await asyncio.Event().wait()
"""


async def start(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *AGENT, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )


async def finish(proc: asyncio.subprocess.Process) -> tuple[int, str, str]:
    async with asyncio.timeout(PROCESS_TIMEOUT):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def cli(*args: str) -> tuple[int, str, str]:
    return await finish(await start(*args))


def enrolled_state_dir(tmp_path: Path, daemon: FakeDaemon) -> Path:
    state = tmp_path / "state"
    with Journal.in_state_dir(state) as journal:
        journal.set_identity(Identity(server=daemon.url, agent_id="agent-1", token=daemon.token, machine_uuid="m-1"))
    return state


def commands_file(tmp_path: Path) -> Path:
    path = tmp_path / "site_cmds.py"
    path.write_text(COMMANDS)
    return path


async def test_enroll_stores_the_identity_privately_and_prints_it(daemon: FakeDaemon, tmp_path: Path) -> None:
    state = tmp_path / "state"
    code, out, err = await cli(
        "enroll", "--server", daemon.url, "--key", "AAAAA-BBBBB", "--tag", "lab", "--tag", "x",
        "--state-dir", str(state), "--machine-uuid", "m-1", "--json",
    )
    assert code == 0, err
    assert json.loads(out) == {"agent_id": "agent-1", "server": daemon.url, "tags": ["lab"], "status": "new",
                               "clone_of": "", "replaces": ""}
    assert "enrolled as new agent agent-1" in err
    [request] = daemon.enrolls
    assert (request.key, request.machine_uuid, request.tags) == ("AAAAA-BBBBB", "m-1", ["lab", "x"])
    assert (request.agent_id, request.token) == (None, "")  # nothing to prove yet
    assert daemon.token not in out + err
    assert stat.S_IMODE(os.stat(state / "journal.sqlite").st_mode) == 0o600
    with Journal.in_state_dir(state) as journal:
        assert journal.identity() == Identity(daemon.url, "agent-1", daemon.token, "m-1", ("lab",))

    # Enrolling again into the state directory proves the agent with its token.
    daemon.enroll_answer = Enrolled(agent_id="agent-1", token=daemon.token, status="existing")
    code, out, err = await cli("enroll", "--server", daemon.url, "--key", "K", "--state-dir", str(state))
    assert (code, out) == (0, "agent-1\n")
    assert "re-enrolled as agent agent-1 (existing: same id, token and tags; its journal is kept)" in err
    assert (daemon.enrolls[-1].agent_id, daemon.enrolls[-1].token) == ("agent-1", daemon.token)


async def test_enroll_refused_names_the_error(daemon: FakeDaemon, tmp_path: Path) -> None:
    daemon.enroll_answer = Error(code=ErrorCode.ENROLL_KEY_UNKNOWN, name="enroll_key_unknown", message="no such key")
    code, out, err = await cli("enroll", "--server", daemon.url, "--key", "nope", "--state-dir", str(tmp_path))
    assert (code, out) == (1, "")
    assert "enrollment refused: enroll_key_unknown (4011): no such key" in err


def test_enroll_rejects_a_non_websocket_url(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["enroll", "--server", "http://x", "--key", "k", "--state-dir", str(tmp_path)]) == 2  # bad input
    assert "is not a ws:// or wss:// URL" in capsys.readouterr().err


async def test_run_serves_commands_and_stops_cleanly_on_sigterm(
    daemon: FakeDaemon, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = enrolled_state_dir(tmp_path, daemon)
    proc = await start("run", "--state-dir", str(state), "--commands", f"{commands_file(tmp_path)}:agent")
    session = await daemon.next_session()
    assert session.hello.commands == ["echo", "hang", "hello", "os_version", "scan"]

    await session.send(daemon.task(1, "hello", {"name": "tether"}))
    result = await session.expect(Result, skip=(Ack, Progress))
    assert (result.ok, unpack(result.output)) == (True, {"hi": "tether"})
    await session.send(Committed(delivery_ids=[1]))

    assert main(["run", "--state-dir", str(state)]) == 1  # fails before starting a loop
    assert "already running with state directory" in capsys.readouterr().err

    proc.send_signal(signal.SIGTERM)
    code, _, err = await finish(proc)
    assert code == 0, err
    assert await session.wait_closed() == 1000
    assert "event=session_open agent_id=agent-1" in err
    assert daemon.token not in err

    assert main(["status", "--state-dir", str(state), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "agent_id": "agent-1", "server": daemon.url, "pending": 0, "running": 0, "outbox": 0, "finished": 1,
        "cancelled": 0,
    }


async def test_run_exits_3_when_the_daemon_refuses_for_good(daemon: FakeDaemon, tmp_path: Path) -> None:
    state = enrolled_state_dir(tmp_path, daemon)
    daemon.refuse_next(ErrorCode.UNAUTHORIZED, "token revoked")
    code, _, err = await cli("run", "--state-dir", str(state))
    assert code == 3
    assert "unauthorized (4010)" in err and "enroll this state directory again as a new agent" in err
    assert "--force" in err


async def test_kill_9_while_running_reports_failure_and_never_reruns(daemon: FakeDaemon, tmp_path: Path) -> None:
    state = enrolled_state_dir(tmp_path, daemon)
    commands = f"{commands_file(tmp_path)}:agent"
    proc = await start("run", "--state-dir", str(state), "--commands", commands)
    session = await daemon.next_session()
    await session.send(daemon.task(1, "hang"), daemon.task(2, "hello"))
    await session.expect(Result, skip=(Ack, Progress))  # 2 finished, 1 is hanging
    proc.kill()
    assert (await finish(proc))[0] == -signal.SIGKILL

    proc = await start("run", "--state-dir", str(state), "--commands", commands)
    session = await daemon.next_session()
    assert session.hello.holding == [1, 2]
    results = {}
    for _ in range(2):
        result = await session.expect(Result, skip=())
        results[result.delivery_id] = result
    assert (results[1].ok, results[1].error) == (False, RESTARTED_WHILE_RUNNING)
    assert results[2].ok
    proc.send_signal(signal.SIGTERM)
    assert (await finish(proc))[0] == 0


def test_status_reads_the_journal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "state"
    assert main(["status", "--state-dir", str(state)]) == 1
    assert "not enrolled: run tether-agent enroll --server URL --key KEY" in capsys.readouterr().err
    assert not state.exists()  # status never creates anything
    with Journal.in_state_dir(state) as journal:
        journal.set_identity(Identity(server="ws://d:1", agent_id="a9", token="t"))
    assert main(["status", "--state-dir", str(state)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[:2] == ["agent_id   a9", "server     ws://d:1"]
    assert "outbox     0" in out


def test_run_without_enrollment_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--state-dir", str(tmp_path / "none")]) == 1
    assert "not enrolled" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["enroll", "run", "status", "set-server"])
def test_every_subcommand_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as leave:
        main([command, "--help"])
    assert leave.value.code == 0
    assert "--state-dir" in capsys.readouterr().out


def test_default_state_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TETHER_AGENT_STATE_DIR", raising=False)
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    assert default_state_dir() == Path("tether-agent-state")
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/tether-agent:/var/lib/other")
    assert default_state_dir() == Path("/var/lib/tether-agent")
    monkeypatch.setenv("TETHER_AGENT_STATE_DIR", "/srv/agent")
    assert default_state_dir() == Path("/srv/agent")


def test_load_agent_from_a_module_or_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "sitepkg_for_agent_test"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "cmds.py").write_text(COMMANDS + "\nnot_an_agent = 3\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "hello" in load_agent("sitepkg_for_agent_test.cmds:agent")
    assert "hang" in load_agent(f"{package / 'cmds.py'}:agent")
    for spec, message in [
        ("no_colon", "module:attr"),
        (f"{tmp_path / 'missing.py'}:agent", "no such file"),
        ("sitepkg_for_agent_test.cmds:nothing", "no attribute 'nothing'"),
        ("sitepkg_for_agent_test.cmds:not_an_agent", "is a int, not a tether.agent.Agent"),
        ("sitepkg_for_agent_test.absent:agent", "ModuleNotFoundError"),
    ]:
        with pytest.raises(CliError, match=message):
            load_agent(spec)


def test_the_agent_imports_nothing_heavy() -> None:
    """The agent runs on every endpoint: stdlib, msgspec, websockets, tether.protocol only."""
    script = textwrap.dedent("""
        import sys
        before = set(sys.modules)
        import tether.agent, tether.agent.cli
        new = {m.split(".")[0] for m in set(sys.modules) - before}
        print("\\n".join(sorted(new - set(sys.stdlib_module_names))))
        print("daemon" if any(m.startswith("tether.daemon") for m in sys.modules) else "")
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    # typing_extensions: msgspec imports it when it is installed (optional for msgspec).
    assert set(out.split()) <= {"tether", "msgspec", "websockets", "typing_extensions", "_virtualenv"}


async def test_a_second_signal_stops_at_once(daemon: FakeDaemon, tmp_path: Path) -> None:
    state = enrolled_state_dir(tmp_path, daemon)
    proc = await start("run", "--state-dir", str(state), "--commands", f"{commands_file(tmp_path)}:agent",
                       "--grace", "60", "--log-level", "debug")
    session = await daemon.next_session()
    await session.send(daemon.task(1, "hang"))
    await session.expect(Progress, skip=(Ack,))
    proc.send_signal(signal.SIGTERM)  # waits for "hang", up to the 60 s grace
    proc.send_signal(signal.SIGINT)
    code, _, err = await finish(proc)
    assert code == 1
    assert "stopped at once on a second signal" in err
    with Journal.in_state_dir(state) as journal:
        assert journal.counts()["outbox"] == 1  # "hang" recorded as failed, not left running


def test_each_state_directory_is_its_own_machine_identity(tmp_path: Path) -> None:
    """16.3: two state directories on one host are two agents; a re-imaged host (a new
    machine id) is a new agent too."""
    one = agent_machine_uuid(tmp_path / "a", host_id="host-1")
    assert one == agent_machine_uuid(tmp_path / "x" / ".." / "a", host_id="host-1") and len(one) == 36
    assert one != agent_machine_uuid(tmp_path / "b", host_id="host-1")
    assert one != agent_machine_uuid(tmp_path / "a", host_id="host-2")
    assert agent_machine_uuid(tmp_path / "a") == agent_machine_uuid(tmp_path / "a", host_id=machine_uuid())


async def test_a_state_directory_holding_an_agent_is_re_enrolled_with_proof_or_not_at_all(
    daemon: FakeDaemon, tmp_path: Path
) -> None:
    """16.2: the daemon refusing the proof, or another URL, changes nothing without --force;
    --force enrolls a new agent and says what it dropped."""
    state = enrolled_state_dir(tmp_path, daemon)
    with Journal.in_state_dir(state) as journal:
        journal.accept([daemon.task(7)])
    daemon.enroll_answer = Error(code=ErrorCode.UNAUTHORIZED, name="unauthorized", message="agent-1's token ...")
    code, out, err = await cli("enroll", "--server", daemon.url, "--key", "K", "--state-dir", str(state))
    assert (code, out) == (1, "")
    assert "enrollment refused: unauthorized (4010): agent-1's token ...; to enroll" in err
    assert "as a new agent, dropping its journal (1 deliveries not yet run or running, 0 results not yet " \
           "committed by tetherd): add --force" in err
    other = daemon.url.replace("127.0.0.1", "localhost")
    code, _, err = await cli("enroll", "--server", other, "--key", "K", "--state-dir", str(state))
    assert code == 1 and f"is agent agent-1 of {daemon.url}. If that tetherd is now reached at {other}: " \
                         f"tether-agent set-server {other}" in err
    assert len(daemon.enrolls) == 1  # the other URL was never sent the token
    with Journal.in_state_dir(state) as journal:
        assert journal.counts()["pending"] == 1 and journal.identity().agent_id == "agent-1"  # type: ignore[union-attr]

    daemon.enroll_answer = Enrolled(agent_id="agent-2", token="t2", clone_of="agent-1")
    code, out, err = await cli("enroll", "--server", other, "--key", "K", "--state-dir", str(state), "--force")
    assert (code, out) == (0, "agent-2\n")
    assert "warning: dropped agent agent-1's journal (1 deliveries not yet run or running" in err
    assert "enrolled as new agent agent-2; tetherd marked it a possible clone of agent agent-1" in err
    assert (daemon.enrolls[-1].agent_id, daemon.enrolls[-1].token) == (None, "")  # --force proves nothing
    with Journal.in_state_dir(state) as journal:
        assert journal.counts()["pending"] == 0
        assert journal.identity() == Identity(other, "agent-2", "t2", daemon.enrolls[-1].machine_uuid)


async def test_a_new_url_needs_no_re_enrollment(daemon: FakeDaemon, tmp_path: Path) -> None:
    state = enrolled_state_dir(tmp_path, daemon)
    code, _, err = await cli("set-server", "wss://tetherd.example:8765", "--state-dir", str(state))
    assert code == 0 and "reaches tetherd at wss://tetherd.example:8765 from now on" in err
    code, _, err = await cli("set-server", "tetherd:8765", "--state-dir", str(state))
    assert code == 2 and "is not a ws:// or wss:// URL; give e.g. ws://tetherd:8765" in err
    code, _, err = await cli("set-server", "ws://x:1", "--state-dir", str(tmp_path / "none"))
    assert code == 1 and "not enrolled" in err
    proc = await start("run", "--state-dir", str(state), "--server", daemon.url)
    await daemon.next_session()  # it connected at the URL given
    proc.send_signal(signal.SIGTERM)
    assert (await finish(proc))[0] == 0
    with Journal.in_state_dir(state) as journal:
        assert journal.identity().server == daemon.url  # type: ignore[union-attr]  # kept


def test_machine_uuid_prefers_stable_os_ids(tmp_path: Path) -> None:
    empty, good = tmp_path / "empty", tmp_path / "machine-id"
    empty.write_text("\n")
    good.write_text("0123abcd\n")
    assert machine_uuid((tmp_path / "missing", empty, good)) == "0123abcd"
    fallback = machine_uuid((tmp_path / "missing",))
    assert fallback == machine_uuid((empty,)) and len(fallback) == 36
