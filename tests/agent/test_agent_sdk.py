"""The SDK (Agent, Context), output encoding, built-ins and log formatting."""

from __future__ import annotations

import datetime
import logging
import platform
import socket
import threading
from typing import Any

import pytest

from tether.agent import Agent, Context
from tether.agent.builtins import BUILTINS, os_version
from tether.agent.logfmt import EventLog, LogfmtFormatter, kv
from tether.agent.runner import encode_output
from tether.protocol import Progress, unpack


def test_command_decorator_forms() -> None:
    agent = Agent("demo")

    @agent.command("named")
    def one(args: dict[str, Any]) -> None: ...

    @agent.command()
    async def two(args: dict[str, Any]) -> None: ...

    @agent.command
    def three(args: dict[str, Any]) -> None: ...

    assert list(agent) == ["named", "three", "two"]
    assert len(agent) == 3 and "two" in agent
    assert agent.commands["named"].function is one
    assert agent.commands["two"].is_async and not agent.commands["named"].is_async


def test_ctx_is_passed_only_to_handlers_that_declare_it() -> None:
    class AsyncCallable:
        async def __call__(self, args: dict[str, Any], *, ctx: Context) -> None: ...

    agent = Agent()
    agent.add_command("plain", lambda args: None)
    agent.add_command("kwonly", lambda args, *, ctx: None)
    agent.add_command("positional", lambda args, ctx=None: None)
    agent.add_command("kwargs", lambda args, **kw: None)
    agent.add_command("obj", AsyncCallable())
    agent.add_command("builtin", print)
    takes = {name: cmd.takes_ctx for name, cmd in agent.commands.items()}
    assert takes == {"plain": False, "kwonly": True, "positional": True, "kwargs": True, "obj": True,
                     "builtin": False}
    assert agent.commands["obj"].is_async


def test_registration_errors_say_what_is_wrong() -> None:
    agent = Agent()
    agent.add_command("x", print)
    with pytest.raises(ValueError, match="already registered"):
        agent.add_command("x", print)
    with pytest.raises(ValueError, match="invalid command name"):
        agent.add_command("file get", print)
    with pytest.raises(TypeError, match="not callable"):
        agent.add_command("y", 42)  # type: ignore[arg-type]


def test_include_merges_and_refuses_clashes() -> None:
    a, b = Agent("a"), Agent("b")
    a.add_command("x", print)
    b.add_command("x", repr)
    b.add_command("y", repr)
    with pytest.raises(ValueError, match="both"):
        a.include(b)
    a.include(b, replace=True)
    assert a.commands["x"].function is repr and "y" in a


async def test_context_progress_validates_and_emits() -> None:
    sent: list[Progress] = []
    ctx = Context(delivery_id=5, task_id=1, command="c", emit=sent.append)
    await ctx.progress(20, "x")
    assert sent == [Progress(delivery_id=5, percent=20, message="x")]
    with pytest.raises(ValueError, match="between 0 and 100"):
        await ctx.progress(150)
    silent = Context(delivery_id=1, task_id=1, command="c")
    await silent.progress(1)
    silent.progress_threadsafe(1)
    assert not silent.cancelled.is_set()


@pytest.mark.parametrize(
    ("value", "decoded"),
    [
        ({"a": [1, 2.5, None, True]}, {"a": [1, 2.5, None, True]}),
        (datetime.datetime(2024, 1, 2, 3, 4, 5), "2024-01-02T03:04:05"),
        ({1: "int keys"}, {"1": "int keys"}),
    ],
)
def test_output_is_normalised_through_json(value: Any, decoded: Any) -> None:
    raw, problem = encode_output(value)
    assert problem == "" and raw is not None
    assert unpack(raw) == decoded


@pytest.mark.parametrize("value", [object(), {"x": socket}, 2**80])
def test_output_that_is_not_json_is_refused(value: Any) -> None:
    raw, problem = encode_output(value)
    assert raw is None
    assert problem.startswith("return value is not JSON-serialisable")


def test_builtins_are_echo_and_os_version() -> None:
    assert list(BUILTINS) == ["echo", "os_version", "scan"]
    facts = os_version({})
    assert facts["system"] == platform.system()
    assert facts["python"] == platform.python_version()


def test_os_version_includes_os_release_when_present(monkeypatch: pytest.MonkeyPatch) -> None:
    release = {"NAME": "Debian GNU/Linux", "VERSION_ID": "12", "PRETTY_NAME": "Debian 12", "ID": "debian"}
    monkeypatch.setattr(platform, "freedesktop_os_release", lambda: release)
    assert os_version({})["os_release"] == {"NAME": "Debian GNU/Linux", "VERSION_ID": "12", "PRETTY_NAME": "Debian 12"}

    def missing() -> dict[str, str]:
        raise OSError("no os-release")

    monkeypatch.setattr(platform, "freedesktop_os_release", missing)
    assert "os_release" not in os_version({})


def test_log_lines_are_key_value_and_quote_when_needed() -> None:
    line = kv("x", [("a", 1), ("b", "two words"), ("c", None), ("d", [1, 2]), ("e", 0.25), ("f", "")])
    assert line == 'event=x a=1 b="two words" d=1,2 e=0.25 f=""'


def test_event_log_binds_context_and_formatter_folds_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    log = EventLog(logging.getLogger("tether.agent.test"), agent_id="a1").bind(session="s1")
    with caplog.at_level(logging.INFO, logger="tether.agent.test"):
        log.info("session_open", window=10)
        log.debug("hidden")
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            log.exception("crash")
    assert [r.getMessage() for r in caplog.records] == [
        "event=session_open agent_id=a1 session=s1 window=10",
        "event=crash agent_id=a1 session=s1",
    ]
    formatted = LogfmtFormatter().format(caplog.records[1])
    assert formatted.startswith("ts=") and " level=error logger=tether.agent.test event=crash" in formatted
    assert "\n" not in formatted and "RuntimeError: boom" in formatted


def test_the_cancelled_event_is_one_event_whoever_asks_first() -> None:
    ctx = Context(delivery_id=1, task_id=1, command="c")
    assert not ctx.is_cancelled()
    seen: list[threading.Event] = []
    threads = [threading.Thread(target=lambda: seen.append(ctx.cancelled)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(e) for e in seen}) == 1 and seen[0] is ctx.cancelled
    ctx.cancelled.set()
    assert ctx.is_cancelled() and seen[0].is_set()
