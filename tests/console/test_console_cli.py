"""tetherctl against a fake daemon: what it sends, what it prints, how it exits.

The fake speaks the real wire (tether.protocol frames as JSON text frames) on 127.0.0.1
port 0; it checks nothing itself but records what it received, and the tests assert on it.
"""

from __future__ import annotations

import io
import json
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from tether.console import CannotConnect, ConsoleClient, SessionClosed, exit_code
from tether.console.cli import main, run
from tether.console.render import (
    fmt_time,
    progress_line,
    render_agents,
    render_table,
    render_task,
    wait_outcome,
)
from tether.protocol import JSON, PROTOCOL_VERSION, decode_to_daemon
from tether.protocol.frames import Error, Event, Frame, Hello, Request, Response, Welcome
from tether.protocol.tags import SEPARATOR, is_tag

TOKEN = "s3cret-admin-token"

Script = Callable[[Request], list[Frame | str]]
"""What the fake answers to a request: frames, or raw text to send as it is."""


def delivery(delivery_id: int, state: str, **kw: Any) -> dict[str, Any]:
    return {"delivery_id": delivery_id, "agent_id": f"agent-{delivery_id}", "state": state,
            "updated_at": 1_700_000_000.0, **kw}


def task_view(*deliveries: dict[str, Any], task_id: int = 7) -> dict[str, Any]:
    return {
        "task_id": task_id, "command": "os_version", "args": {}, "target": "tag:web",
        "priority": 2, "ttl": 604800, "created_at": 1_700_000_000.0,
        "expires_at": 1_700_604_800.0, "state": "active", "deliveries": list(deliveries),
    }


@dataclass
class FakeDaemon:
    url: str = ""
    script: Script = lambda req: [Response(id=req.id, result=None)]
    refuse: Error | None = None
    """Answer the hello with this error and close with its code."""
    close_code: int | None = None
    """Close with this code right after the hello, sending nothing."""
    silent: bool = False
    """Never answer the hello."""
    connections: int = 0
    hellos: list[Hello] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    text_frames: list[bool] = field(default_factory=list)

    async def handler(self, ws: ServerConnection) -> None:
        self.connections += 1
        async for message in ws:
            self.text_frames.append(isinstance(message, str))
            frame = decode_to_daemon(message)
            if isinstance(frame, Hello):
                self.hellos.append(frame)
                if self.silent:
                    continue
                if self.close_code is not None:
                    await ws.close(self.close_code, "go away")
                    return
                if self.refuse is not None:
                    await ws.send(JSON.encode(self.refuse), text=True)
                    await ws.close(self.refuse.code, self.refuse.name)
                    return
                await ws.send(JSON.encode(Welcome(version=PROTOCOL_VERSION, role="console",
                                                  session_id="s1", server_time=0.0)), text=True)
            else:
                assert isinstance(frame, Request)
                self.requests.append(frame)
                for reply in self.script(frame):
                    await ws.send(reply if isinstance(reply, str) else JSON.encode(reply), text=True)

    @property
    def request(self) -> Request:
        assert len(self.requests) == 1, self.requests
        return self.requests[0]


@pytest.fixture
async def fake() -> AsyncIterator[FakeDaemon]:
    daemon = FakeDaemon()
    async with serve(daemon.handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        daemon.url = f"ws://127.0.0.1:{port}"
        yield daemon


@dataclass
class Outcome:
    code: int
    out: str
    err: str


async def tetherctl(fake: FakeDaemon | None, *argv: str, stdin: str = "", env: dict[str, str] | None = None) -> Outcome:
    out, err = io.StringIO(), io.StringIO()
    environ = {"TETHER_TOKEN": TOKEN} if env is None else env
    if fake is not None:
        environ.setdefault("TETHER_URL", fake.url)
    code = await run(list(argv), stdin=io.StringIO(stdin), stdout=out, stderr=err, environ=environ)
    return Outcome(code, out.getvalue(), err.getvalue())


def answer(result: Any) -> Script:
    return lambda req: [Response(id=req.id, result=result)]


# -- argument parsing and local validation: nothing is sent ---------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["task", "os_version", "--agent", "a1", "--args", "{not json"], "error: --args is not valid JSON"),
        (["task", "os_version", "--agent", "a1", "--args", "[1, 2]"], "error: --args must be a JSON object"),
        (["task", "os_version", "--agent", "a1", "--args", '"x"'], "error: --args must be a JSON object"),
        (["task", "os_version"], "one of the arguments --agent --tag --all --selector is required"),
        (["task", "os_version", "--agent", "a1", "--tag", "web"], "not allowed with argument --agent"),
        (["task", "os_version", "--all", "--tag", "web"], "not allowed with argument --all"),
        (["task", "os_version", "--all", "--priority", "extreme"], "invalid priority 'extreme'"),
        (["task", "os_version", "--all", "--ttl", "0"], "argument --ttl: invalid duration '0': it must be more than 0 s"),
        (["task", "os_version", "--all", "--ttl", "4000d"], "error: invalid_params (1201): ttl must be between"),
        (["task", "   ", "--all"], "error: invalid_params (1201)"),
        (["task", "file_get --path '/etc/hosts", "--all"], "cannot parse command line"),
        (["untask"], "one of the arguments TASK_ID --agent --tag --selector is required"),
        (["untask", "3", "--tag", "web"], "not allowed with argument TASK_ID"),
        (["tasks", "--agent", "a1", "--tag", "web"], "not allowed with argument --agent"),
        (["tasks", "--state", "finished"], "invalid choice: 'finished'"),
        (["tag", "add", "a1", "two words"], "error: invalid_params (1201): invalid tag 'two words'"),
        (["tag", "clear", "a1", "web"], "invalid choice: 'clear'"),
        (["wait", "seven"], "argument TASK_ID: invalid number 'seven': give a whole number"),
        (["action", "{oops"], "error: the action is not valid JSON"),
        (["action", '{"action": "explode"}'], "error: invalid_action (1202): unknown action 'explode'"),
        (["action", '{"action": "task", "task": "x", "sid": "a", "tag": "web"}'],
         "error: invalid_action (1202): give one target, not sid and tag"),
        (["action", '{"action": "task", "task": "x", "selector": "plat == "}'],
         "error: invalid_params (1201): invalid selector at column 9"),
        ([], "the following arguments are required: COMMAND"),
    ],
)
async def test_bad_input_exits_2_and_sends_nothing(fake: FakeDaemon, capsys: pytest.CaptureFixture[str],
                                                   argv: list[str], message: str) -> None:
    result = await tetherctl(fake, *argv)
    # argparse writes its own usage errors to the real stderr.
    assert message in result.err + capsys.readouterr().err
    assert result.code == 2
    assert fake.connections == 0


async def test_action_from_stdin_invalid_json_exits_2(fake: FakeDaemon) -> None:
    result = await tetherctl(fake, "action", "-", stdin="{'action': 'list'}")
    assert (result.code, fake.connections) == (2, 0)
    assert result.err.startswith("error: the action is not valid JSON")
    assert "Traceback" not in result.err


@pytest.mark.parametrize("command", ["agents", "tag", "task", "tasks", "show", "wait", "untask", "action"])
async def test_every_subcommand_has_help_with_exit_codes(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    result = await tetherctl(None, command, "--help")
    help_text = capsys.readouterr().out
    assert result.code == 0
    assert f"usage: tetherctl {command}" in help_text
    assert "examples:\n  tetherctl " + command in help_text
    assert "exit codes:\n  0 " in help_text and ("124  --timeout passed first" in help_text) == (command == "wait")
    assert "--json" in help_text and "TETHER_URL" in help_text


def test_main_returns_the_exit_code_of_bad_input() -> None:
    assert main(["task", "x", "--all", "--args", "[]"]) == 2


# -- rendering -----------------------------------------------------------------------------


def test_render_table_aligns_columns_and_right_aligns_numbers() -> None:
    text = render_table(("ID", "NAME", "N"), [("a", "short", 5), ("bbbb", "much longer", 120)])
    assert text.splitlines() == [
        "ID    NAME           N",
        "a     short          5",
        "bbbb  much longer  120",
    ]


def test_times_are_iso_utc_and_unset_is_a_dash() -> None:
    assert fmt_time(0) == "-"
    assert fmt_time(None) == "-"
    assert fmt_time(1_700_000_000.9) == "2023-11-14T22:13:20Z"


def test_render_agents() -> None:
    agents = [
        {"agent_id": "a1", "hostname": "web-1", "platform": "linux", "tags": ["web", "prod"],
         "online": True, "enrolled_at": 1.0, "last_seen": 1_700_000_000.0, "commands": []},
        {"agent_id": "a22", "hostname": "db", "platform": "windows", "tags": [],
         "online": False, "enrolled_at": 1.0, "last_seen": None, "commands": []},
    ]
    lines = render_agents(agents).splitlines()
    assert lines[0].split() == ["AGENT", "HOSTNAME", "PLATFORM", "ONLINE", "LAST", "SEEN", "TAGS"]
    assert lines[1].split() == ["a1", "web-1", "linux", "yes", "2023-11-14T22:13:20Z", "web,prod"]
    assert not is_tag(SEPARATOR)  # no tag contains it: "web,prod" reads one way
    assert lines[2].split() == ["a22", "db", "windows", "no", "-", "-"]
    assert lines[1].index("linux") == lines[2].index("windows")
    assert render_agents([]) == "no agents"


def test_render_agents_notes_possible_clones_removed_and_merged_agents() -> None:
    base = {"hostname": "h", "platform": "linux", "tags": [], "online": False, "enrolled_at": 1.0,
            "last_seen": None, "commands": []}
    agents = [{**base, "agent_id": "a1"}, {**base, "agent_id": "a2", "clone_of": "a1"},
              {**base, "agent_id": "a3", "removed_at": 1_700_000_000.0},
              {**base, "agent_id": "a4", "removed_at": 1.0, "merged_into": "a1"}]
    lines = render_agents(agents).splitlines()
    assert lines[0].split()[-1] == "NOTE" and lines[1].split()[-1] == "-"
    assert lines[2].endswith("possible clone of a1 (tetherctl agent approve|merge|rm a2)")
    assert lines[3].endswith("removed 2023-11-14T22:13:20Z") and lines[4].endswith("merged into a1")


@pytest.mark.parametrize(("argv", "method", "answer_", "printed"), [
    (["agent", "rm", "a2"], "agent.rm",
     {"agent_id": "a2", "outcome": "removed", "cancelled": 2, "sessions_closed": 1},
     "agent a2 removed; 2 unfinished deliveries of its own cancelled; 1 open session closed\n"),
    (["agent", "approve", "a2"], "agent.approve", {"agent_id": "a2", "outcome": "approved"},
     "agent a2 approved: an agent of its own, no longer a possible clone\n"),
    (["agent", "merge", "a2"], "agent.merge", {"agent_id": "a2", "outcome": "merged", "into": "a1"},
     "agent a2 merged into agent a1: it has that id, tags and deliveries from its next session\n"),
])
async def test_agent_rm_approve_merge(fake: FakeDaemon, argv: list[str], method: str, answer_: dict[str, Any],
                                      printed: str) -> None:
    fake.script = answer(answer_)
    result = await tetherctl(fake, *argv)
    assert (result.code, result.out) == (0, printed)
    assert (fake.request.method, fake.request.params) == (method, {"agent_id": "a2"})


def test_render_task_shows_each_delivery_with_result_or_error() -> None:
    text = render_task(task_view(
        delivery(1, "done", finished_at=1_700_000_100.0, result={"version": "12", "build": 3}),
        delivery(2, "failed", error="permission denied"),
    ))
    assert "task 7" in text
    assert "priority    high (2)" in text
    assert "deliveries  1 done, 1 failed" in text
    assert "delivery 1  agent agent-1  done" in text
    assert "finished  2023-11-14T22:15:00Z" in text
    assert '    {\n      "build": 3,\n      "version": "12"\n    }' in text
    assert "delivery 2  agent agent-2  failed" in text
    assert "error     permission denied" in text


@pytest.mark.parametrize(
    ("states", "code"),
    [([], 0), (["done", "done"], 0), (["done", "failed"], 1), (["expired"], 1), (["cancelled", "done"], 1),
     (["done", "running"], 124), (["failed", "queued"], 124), (["waiting"], 124)],
)
def test_wait_outcome(states: list[str], code: int) -> None:
    assert wait_outcome(task_view(*(delivery(i, s) for i, s in enumerate(states)))) == code


# -- against the fake daemon ---------------------------------------------------------------


async def test_task_sends_the_whole_command_line_and_prints_the_task_id(fake: FakeDaemon) -> None:
    fake.script = answer({"task_id": 42, "deliveries": 3})
    result = await tetherctl(fake, "task", "file_get --path /etc/hosts", "--tag", "web",
                             "--args", '{"max": 10}', "--ttl", "60", "--priority", "urgent")
    assert result.code == 0
    assert result.out == "42\n"
    assert fake.request.method == "task.create"
    assert fake.request.params == {"command": "file_get --path /etc/hosts", "args": {"max": 10},
                                   "tag": "web", "ttl": 60, "priority": 3}
    assert fake.hellos == [Hello(role="console", version=PROTOCOL_VERSION, token=TOKEN)]
    assert all(fake.text_frames)


async def test_task_json_and_defaults(fake: FakeDaemon) -> None:
    fake.script = answer({"task_id": 5, "deliveries": 1})
    result = await tetherctl(fake, "task", "os_version", "--all", "--json")
    assert result.code == 0
    assert json.loads(result.out) == {"task_id": 5, "deliveries": 1}
    assert fake.request.params == {"command": "os_version", "args": {}, "all": True, "priority": 1}


async def test_server_and_token_options_override_the_environment(fake: FakeDaemon) -> None:
    fake.script = answer([])
    env = {"TETHER_URL": "ws://127.0.0.1:9/nowhere", "TETHER_TOKEN": "from-env"}
    result = await tetherctl(None, "--token", "from-flag", "agents", "--server", fake.url, env=env)
    assert result.code == 0
    assert result.out == "no agents\n"
    assert fake.hellos[0].token == "from-flag"
    assert fake.request.method == "agents.list"


@pytest.mark.parametrize(
    ("argv", "params", "answered", "said"),
    [(["untask", "12"], {"task_id": 12}, {"cancelled": 4, "tasks": 1},
      "cancelled 4 deliveries; closed task 12 (it reaches no new agent)"),
     (["untask", "12"], {"task_id": 12}, {"cancelled": 0}, "cancelled 0 deliveries"),
     (["untask", "--agent", "a1"], {"agent": "a1"}, {"cancelled": 1}, "cancelled 1 delivery of agent a1"),
     (["untask", "--tag", "web"], {"tag": "web"}, {"cancelled": 0, "tasks": 2},
      "cancelled 0 deliveries of agents tagged 'web' and of tasks aimed at it; closed 2 tasks aimed at tag 'web' "
      "(they reach no new agent)")],
)
async def test_untask_says_what_it_changed(fake: FakeDaemon, argv: list[str], params: dict[str, Any],
                                           answered: dict[str, int], said: str) -> None:
    fake.script = answer(answered)
    result = await tetherctl(fake, *argv)
    assert (result.code, result.out) == (0, said + "\n")
    assert (fake.request.method, fake.request.params) == ("task.cancel", params)


async def test_action_sends_the_object_as_is_and_renders_the_translated_result(fake: FakeDaemon) -> None:
    fake.script = answer({"task_id": 9, "deliveries": 2})
    obj = {"action": "task", "task": "os_version", "tag": "web", "ttl": 3600, "priority": "high"}
    result = await tetherctl(fake, "action", json.dumps(obj))
    assert (result.code, result.out) == (0, "9\n")
    assert (fake.request.method, fake.request.params) == ("action", obj)


async def test_action_from_stdin(fake: FakeDaemon) -> None:
    fake.script = answer([{"task_id": 1, "delivery_id": 2, "agent_id": "a1", "command": "os_version",
                           "state": "queued", "priority": 1, "created_at": 1.0, "expires_at": 2.0}])
    result = await tetherctl(fake, "action", "-", stdin='{"action": "list", "sid": "a1"}')
    assert result.code == 0
    assert (fake.request.method, fake.request.params) == ("action", {"action": "list", "sid": "a1"})
    header, row = result.out.splitlines()
    assert header.split()[:5] == ["TASK", "DELIVERY", "AGENT", "COMMAND", "STATE"]
    assert row.split()[:6] == ["1", "2", "a1", "os_version", "queued", "medium"]


async def test_tasks_tag_and_show_requests(fake: FakeDaemon) -> None:
    fake.script = answer([])
    assert (await tetherctl(fake, "tasks", "--tag", "web", "--state", "all", "--limit", "5")).out == "no deliveries\n"
    fake.requests.clear()
    fake.script = answer({"agent_id": "a1"})
    assert (await tetherctl(fake, "tag", "rm", "a1", "web")).out == "tag 'web' removed from agent a1\n"
    assert (fake.request.method, fake.request.params) == ("tag.rm", {"agent_id": "a1", "tag": "web"})
    fake.requests.clear()
    fake.script = answer({"agent_id": "a1", "tag": "web", "new_deliveries": 2})
    result = await tetherctl(fake, "tag", "add", "a1", "web")
    assert result.out == "tag 'web' added to agent a1 (2 deliveries of tag tasks queued)\n"
    assert (fake.request.method, fake.request.params) == ("tag.add", {"agent_id": "a1", "tag": "web"})
    fake.requests.clear()
    fake.script = answer(task_view(delivery(1, "running", progress="40%")))
    result = await tetherctl(fake, "show", "7")
    assert (fake.request.method, fake.request.params) == ("task.get", {"task_id": 7})
    assert "progress  40%" in result.out


async def test_error_answer_exits_2_without_traceback(fake: FakeDaemon) -> None:
    fake.script = lambda req: [Error(code=1302, name="unknown_task", message="no task 99", ref=req.id)]
    result = await tetherctl(fake, "show", "99")
    assert result.code == 2
    assert result.out == ""
    assert result.err == "error: unknown_task (1302): no task 99\n"


async def test_unauthorized_exits_3(fake: FakeDaemon) -> None:
    fake.refuse = Error(code=4010, name="unauthorized", message="wrong token")
    result = await tetherctl(fake, "agents")
    assert result.code == 3
    assert result.err == "error: unauthorized (4010): wrong token\n"
    assert fake.requests == []


async def test_unauthorized_without_a_token_says_how_to_give_one(fake: FakeDaemon) -> None:
    fake.refuse = Error(code=4010, name="unauthorized", message="wrong token")
    result = await tetherctl(fake, "agents", env={})
    assert (result.code, fake.hellos[0].token) == (3, "")
    assert "pass --token or set TETHER_TOKEN" in result.err


async def test_close_code_without_error_frame_exits_3(fake: FakeDaemon) -> None:
    fake.close_code = 4010
    result = await tetherctl(fake, "agents")
    assert result.code == 3
    assert result.err == "error: unauthorized (4010): go away\n"


async def test_cannot_connect_exits_3() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago and is closed now
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = await tetherctl(None, "--server", f"ws://127.0.0.1:{port}", "agents")
    assert result.code == 3
    assert result.err.startswith(f"error: cannot connect to ws://127.0.0.1:{port}: ")


async def test_wait_prints_progress_on_stderr_and_exits_124_on_timeout(fake: FakeDaemon) -> None:
    def script(req: Request) -> list[Frame | str]:
        return [
            Event(id=req.id, topic="delivery", data=delivery(1, "running", progress="10%")),
            Event(id=req.id + 100, topic="delivery", data=delivery(9, "done")),  # not ours: ignored
            Event(id=req.id, topic="delivery", data=delivery(2, "done")),
            Response(id=req.id, result=task_view(delivery(1, "running"), delivery(2, "done"))),
        ]

    fake.script = script
    result = await tetherctl(fake, "wait", "7", "--timeout", "1.5")
    assert result.code == 124
    assert (fake.request.method, fake.request.params) == ("task.wait", {"task_id": 7, "timeout": 1.5})
    timed_out = ("wait: timed out after 1.5 s: 1 of 2 deliveries of task 7 not finished (exit 124; see tetherctl "
                 "show 7)")
    assert result.err.splitlines() == [
        "2023-11-14T22:13:20Z  delivery 1  agent agent-1  running  10%",
        "2023-11-14T22:13:20Z  delivery 2  agent agent-2  done",
        timed_out,
    ]
    assert "delivery 1  agent agent-1  running" in result.out
    result = await tetherctl(fake, "wait", "7", "--timeout", "1.5", "--json")
    assert result.code == 124 and result.err.splitlines() == [timed_out]


@pytest.mark.parametrize(("states", "code"), [(["done", "done"], 0), (["done", "failed"], 1)])
async def test_wait_json_exit_code_follows_the_deliveries(fake: FakeDaemon, states: list[str], code: int) -> None:
    view = task_view(*(delivery(i, s) for i, s in enumerate(states)))
    fake.script = lambda req: [Event(id=req.id, topic="delivery", data=delivery(0, "done")),
                               Response(id=req.id, result=view)]
    result = await tetherctl(fake, "wait", "7", "--json")
    assert result.code == code
    assert json.loads(result.out) == view
    assert result.err == ""  # no progress lines with --json
    assert fake.request.params == {"task_id": 7}


# -- ConsoleClient, the piece the benchmark and e2e tests reuse --------------------------------


async def test_client_numbers_requests_and_delivers_events(fake: FakeDaemon) -> None:
    fake.script = lambda req: [Event(id=req.id, topic="delivery", data={"n": req.id}),
                               Response(id=req.id, result=req.params)]
    events: list[Event] = []
    async with ConsoleClient(fake.url, TOKEN) as client:
        assert client.welcome is not None and client.welcome.session_id == "s1"
        assert await client.call("agents.list", {"online": True}, on_event=events.append) == {"online": True}
        assert await client.call("agents.list") == {}
    assert [r.id for r in fake.requests] == [1, 2]
    assert events == [Event(id=1, topic="delivery", data={"n": 1})]


async def test_client_handshake_timeout(fake: FakeDaemon) -> None:
    fake.silent = True
    with pytest.raises(CannotConnect, match=r"no welcome within 0\.2 s"):
        async with ConsoleClient(fake.url, TOKEN, open_timeout=0.2):
            pass


async def test_client_session_error_during_a_call(fake: FakeDaemon) -> None:
    fake.script = lambda req: [Error(code=4020, name="replaced", message="a newer session opened")]
    async with ConsoleClient(fake.url, TOKEN) as client:
        with pytest.raises(SessionClosed) as caught:
            await client.call("agents.list")
    assert (caught.value.code, exit_code(caught.value)) == (4020, 3)


async def test_frames_of_a_newer_protocol_are_skipped(fake: FakeDaemon) -> None:
    fake.script = lambda req: ['{"t": "hologram", "id": 1}', Response(id=req.id, result={"cancelled": 0})]
    result = await tetherctl(fake, "untask", "1", "--json")
    assert (result.code, json.loads(result.out)) == (0, {"cancelled": 0})


async def test_a_garbled_answer_ends_the_session_with_exit_3(fake: FakeDaemon) -> None:
    fake.script = lambda req: ["{not json"]
    result = await tetherctl(fake, "show", "1")
    assert result.code == 3
    assert result.err.startswith("error: malformed_frame (1100): the daemon sent malformed JSON frame")


async def test_priority_by_number_and_agents_filters(fake: FakeDaemon) -> None:
    fake.script = answer({"task_id": 1, "deliveries": 1})
    result = await tetherctl(fake, "task", "scan", "--agent", "a1", "--priority", "0")
    assert (result.code, result.err) == (0, "task 1: 1 delivery queued\n")
    assert fake.request.params["priority"] == 0
    fake.requests.clear()
    fake.script = answer([])
    assert (await tetherctl(fake, "agents", "--tag", "web", "--online")).code == 0
    assert fake.request.params == {"tag": "web", "online": True}
    fake.requests.clear()
    assert (await tetherctl(fake, "agents", "--all")).code == 0
    assert fake.request.params == {"online": False, "all": True}
    fake.requests.clear()
    fake.script = answer({"key_id": 2, "key": "K", "tags": [], "created_at": 1.0, "expires_at": None,
                          "uses_left": None, "revoked_at": None, "allow_requested_tags": True})
    assert (await tetherctl(fake, "key", "create", "--allow-requested-tags")).code == 0
    assert fake.request.params == {"tags": [], "allow_requested_tags": True}


def test_progress_line_shows_errors_and_unknown_events() -> None:
    line = progress_line(Event(id=1, topic="delivery", data=delivery(3, "failed", error="boom")))
    assert line.endswith("delivery 3  agent agent-3  failed  error: boom")
    assert progress_line(Event(id=1, topic="note", data=[1])) == "note: [1]"


# -- polling history and recurring schedules -------------------------------------------------


def polled_task(**kw: Any) -> dict[str, Any]:
    """A task whose one delivery polled three times and was timed out by tetherd."""
    history = [
        {"run": 1, "at": 1_700_000_000.0, "state": "waiting", "partial_result": {"percent": 10},
         "poll_message": "Fetching Results:", "next_run_at": 1_700_000_030.0},
        {"run": 2, "at": 1_700_000_030.0, "state": "waiting", "note": "next run asked for in 1 s; raised to the 10 s floor",
         "next_run_at": 1_700_000_040.0},
        {"run": 3, "at": 1_700_000_600.0, "state": "failed", "error": "polling timed out after 600 s", "by": "daemon"},
    ]
    view = task_view(delivery(1, "failed", run=3, error="polling timed out after 600 s", history=history,
                              history_hidden=2), **kw)
    view["hide_polling_output"] = True
    return view


async def test_show_history_asks_for_it_and_prints_every_entry(fake: FakeDaemon) -> None:
    fake.script = answer(polled_task())
    result = await tetherctl(fake, "show", "7", "--history")
    assert result.code == 0
    assert (fake.request.method, fake.request.params) == ("task.get", {"task_id": 7, "history": True})
    out = result.out
    assert "delivery 1  agent agent-1  failed  run 3" in out
    assert "polling output  runs after the first that show nothing are hidden" in out
    assert "  history (5 entries, 2 hidden: they show nothing (--show-polling-output shows them))" in out
    assert "    #1  2023-11-14T22:13:20Z  waiting  Fetching Results:" in out
    assert "      next run: 2023-11-14T22:13:50Z" in out
    assert '      partial result:\n        {\n          "percent": 10\n        }' in out
    assert "    #2  2023-11-14T22:13:50Z  waiting\n      note: next run asked for in 1 s; raised to the 10 s floor" in out
    assert "    #3  2023-11-14T22:23:20Z  failed  (by tetherd)\n      error: polling timed out after 600 s" in out
    assert out.index("#1") < out.index("#2") < out.index("#3")


async def test_show_without_history_prints_none(fake: FakeDaemon) -> None:
    fake.script = answer(polled_task())
    result = await tetherctl(fake, "show", "7")
    assert fake.request.params == {"task_id": 7}
    assert "history" not in result.out and "#1" not in result.out


def test_a_history_with_no_finished_run_says_so() -> None:
    text = render_task(task_view(delivery(1, "running", history=[])), history=True)
    assert "  history (0 entries)\n    (no run has finished yet)" in text


async def test_task_show_polling_output(fake: FakeDaemon) -> None:
    fake.script = answer({"task_id": 3, "deliveries": 1})
    result = await tetherctl(fake, "task", "x --polling", "--agent", "a", "--show-polling-output")
    assert (result.code, result.out) == (0, "3\n")
    assert fake.request.params == {"command": "x --polling", "args": {}, "agent": "a", "priority": 1,
                                   "show_polling_output": True}
    # hiding is the default (XSOAR's): the old flag is accepted and sends nothing
    await tetherctl(fake, "task", "x --polling", "--agent", "a", "--hide-polling-output")
    assert fake.requests[-1].params == {"command": "x --polling", "args": {}, "agent": "a", "priority": 1}


def schedule_view(name: str = "state", **kw: Any) -> dict[str, Any]:
    return {
        "schedule_id": 1, "name": name, "command": "state", "args": {}, "target": "tag:linux", "every": 300.0,
        "cron": None, "timezone": "UTC", "ttl": 604800, "priority": 1, "hide_polling_output": False,
        "missed": "once", "paused": False, "created_at": 1_700_000_000.0, "next_fire_at": 1_700_000_300.0,
        "last_fire_at": None, "fired": 0, "missed_total": 0, "skipped": 0, **kw,
    }


async def test_schedule_add_every(fake: FakeDaemon) -> None:
    fake.script = answer(schedule_view())
    result = await tetherctl(fake, "schedule", "add", "state", "--every", "5m", "state", "--tag", "linux")
    assert result.code == 0
    assert (fake.request.method, fake.request.params) == ("schedule.add", {
        "name": "state", "command": "state", "args": {}, "tag": "linux", "priority": 1, "missed": "once",
        "timezone": "UTC", "every": 300.0})
    assert result.out.startswith("schedule state\n  when  ")
    assert "every 5m" in result.out and "next firing  2023-11-14T22:18:20Z" in result.out


async def test_schedule_add_cron(fake: FakeDaemon) -> None:
    fake.script = answer(schedule_view(every=None, cron="0 9 * * 1-5", timezone="Europe/Paris", missed="skip"))
    result = await tetherctl(fake, "schedule", "add", "daily", "--cron", "0 9 * * 1-5", "--tz", "Europe/Paris",
                             "record --from s", "--agent", "a1", "--missed", "skip", "--ttl", "600",
                             "--show-polling-output")
    assert result.code == 0
    assert fake.request.params == {
        "name": "daily", "command": "record --from s", "args": {}, "agent": "a1", "priority": 1, "missed": "skip",
        "timezone": "Europe/Paris", "cron": "0 9 * * 1-5", "ttl": 600, "show_polling_output": True}
    assert "cron 0 9 * * 1-5 (Europe/Paris)" in result.out
    assert "policy: skip" in result.out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--every=-5m"], "invalid duration '-5m'"),
        (["--every", "five"], "invalid duration 'five'"),
        (["--every", "0"], "argument --every: invalid duration '0': it must be more than 0 s"),
        (["--every", "5m", "--cron", "* * * * *"], "not allowed with argument --every"),
        ([], "one of the arguments --every --cron is required"),
        (["--every", "5m", "--missed", "twice"], "invalid choice: 'twice'"),
    ],
)
async def test_schedule_add_bad_input_exits_2_and_sends_nothing(
        fake: FakeDaemon, capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    result = await tetherctl(fake, "schedule", "add", "state", *argv, "state", "--tag", "linux")
    assert message in result.err + capsys.readouterr().err
    assert (result.code, fake.connections) == (2, 0)


async def test_schedule_add_bad_name_exits_2_and_sends_nothing(fake: FakeDaemon) -> None:
    result = await tetherctl(fake, "schedule", "add", "two words", "--every", "5m", "state", "--all")
    assert (result.code, fake.connections) == (2, 0)
    assert "invalid schedule name 'two words'" in result.err


async def test_schedule_list_renders_a_table(fake: FakeDaemon) -> None:
    fake.script = answer([
        schedule_view("nightly", every=None, cron="0 2 * * *", fired=12, last_fire_at=1_700_000_000.0),
        schedule_view("state", paused=True, next_fire_at=None),
    ])
    result = await tetherctl(fake, "schedule", "list")
    assert result.code == 0
    assert (fake.request.method, fake.request.params) == ("schedule.list", {})
    header, nightly, state = result.out.splitlines()
    assert header.split() == ["NAME", "WHEN", "COMMAND", "TARGET", "STATE", "NEXT", "LAST", "FIRED"]
    assert nightly.startswith("nightly  cron 0 2 * * *  state")
    assert nightly.split()[-5:] == ["tag:linux", "active", "2023-11-14T22:18:20Z", "2023-11-14T22:13:20Z", "12"]
    assert state.startswith("state    every 5m")
    assert state.split()[-5:] == ["tag:linux", "paused", "-", "-", "0"]


async def test_schedule_list_empty(fake: FakeDaemon) -> None:
    fake.script = answer([])
    assert (await tetherctl(fake, "schedule", "list")).out == "no schedules\n"


@pytest.mark.parametrize(
    ("op", "method", "view", "shows"),
    [
        ("show", "schedule.get", schedule_view(recent_tasks=[9, 4], fired=2, missed_total=3, skipped=1),
         ["newest tasks 9, 4", "fired 2 tasks", "missed 3 while tetherd was down (1 skipped); policy: once"]),
        ("pause", "schedule.pause", schedule_view(paused=True, next_fire_at=None), ["state paused", "next firing -"]),
        ("resume", "schedule.resume", schedule_view(), ["state active", "next firing 2023-11-14T22:18:20Z"]),
    ],
)
async def test_schedule_show_pause_resume(fake: FakeDaemon, op: str, method: str, view: dict[str, Any],
                                          shows: list[str]) -> None:
    fake.script = answer(view)
    result = await tetherctl(fake, "schedule", op, "state")
    assert result.code == 0
    assert (fake.request.method, fake.request.params) == (method, {"name": "state"})
    lines = [" ".join(line.split()) for line in result.out.splitlines()]  # field columns are padded
    assert lines[0] == "schedule state"
    for line in shows:
        assert line in lines


async def test_schedule_rm(fake: FakeDaemon) -> None:
    fake.script = answer({"name": "state", "removed": True})
    result = await tetherctl(fake, "schedule", "rm", "state")
    assert (result.code, result.out) == (0, "schedule 'state' removed (the tasks it created stay)\n")
    assert (fake.request.method, fake.request.params) == ("schedule.rm", {"name": "state"})


async def test_an_unknown_schedule_exits_2(fake: FakeDaemon) -> None:
    fake.script = lambda req: [Error(code=1306, name="unknown_schedule", message="no schedule named 'nope'",
                                     ref=req.id)]
    result = await tetherctl(fake, "schedule", "show", "nope")
    assert (result.code, result.out) == (2, "")
    assert result.err == "error: unknown_schedule (1306): no schedule named 'nope'\n"


async def test_schedule_add_help_explains_every_cron_and_missed(capsys: pytest.CaptureFixture[str]) -> None:
    result = await tetherctl(None, "schedule", "add", "--help")
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines where it likes
    assert result.code == 0
    assert "usage: tetherctl schedule add" in text
    assert "--every DURATION 30s, 5m, 1h30m, 7d or plain seconds; at least tetherd's min_interval" in text
    assert "never below tetherd's min_interval" in text
    assert "five-field --cron expression (e.g. '*/5 * * * *', read in --tz)" in text
    assert "--cron EXPR five fields: minute hour" in text
    assert "--missed {once,skip} firings missed while tetherd was down: run once at start (default) or skip them" \
        in text
    assert "124" not in text and "exit codes: 0 ok" in text  # only the codes that apply


async def test_schedule_help_lists_its_actions(capsys: pytest.CaptureFixture[str]) -> None:
    result = await tetherctl(None, "schedule", "--help")
    text = capsys.readouterr().out
    assert result.code == 0
    for op in ("add", "list", "show", "pause", "resume", "rm"):
        assert f"    {op} " in text
