"""Each side binds one implementation to every declared console method, none twice: the
daemon's handlers, tetherctl's renderers and the tetherctl command that calls each method."""

from __future__ import annotations

import argparse
import io

import pytest

from tether.console.parser import build_parser
from tether.console.plan import COMMANDS, plan, plans
from tether.console.results import renders
from tether.daemon.rpc import handler
from tether.protocol.methods import METHODS, Bindings, Method

SIDES: dict[str, Bindings] = {"daemon handler": handler, "tetherctl renderer": renders, "tetherctl command": plans}


@pytest.mark.parametrize("side", SIDES)
def test_every_method_is_bound_on_each_side(side: str) -> None:
    assert SIDES[side].unbound() == [], f"declared in tether/protocol/methods.py but no {side}"


@pytest.mark.parametrize("side", SIDES)
def test_a_new_declaration_without_a_binding_fails_the_check(side: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from tether.protocol.console import Nothing

    extra = Method(name="fleet.report", params=Nothing, result=Nothing, role="viewer", summary="A report.")
    monkeypatch.setitem(METHODS, extra.name, extra)
    assert SIDES[side].unbound() == ["fleet.report"]


@pytest.mark.parametrize("side", SIDES)
def test_binding_a_bound_method_again_is_refused(side: str) -> None:
    method = next(iter(METHODS.values()))
    with pytest.raises(ValueError, match=f"^{method.name} has two"):
        SIDES[side](method)(lambda *_: None)


ARGV: dict[str, list[str]] = {
    "agents.list": ["agents"],
    "tag.add": ["tag", "add", "a1", "web"],
    "tag.rm": ["tag", "rm", "a1", "web"],
    "task.create": ["task", "--all", "os_version"],
    "task.list": ["tasks"],
    "task.get": ["show", "3"],
    "task.wait": ["wait", "3"],
    "task.cancel": ["untask", "3"],
    "task.watch": ["watch", "3"],
    "alerts.list": ["alerts", "--since", "1h"],
    "alert.get": ["alerts", "show", "7"],
    "alert.ack": ["alerts", "ack", "7"],
    "schedule.add": ["schedule", "add", "nightly", "--every", "1h", "--all", "record"],
    "schedule.list": ["schedule", "list"],
    "schedule.get": ["schedule", "show", "nightly"],
    "schedule.pause": ["schedule", "pause", "nightly"],
    "schedule.resume": ["schedule", "resume", "nightly"],
    "schedule.rm": ["schedule", "rm", "nightly"],
    "token.create": ["token", "create"],
    "token.list": ["token", "list"],
    "token.revoke": ["token", "revoke", "2"],
    "key.create": ["key", "create"],
    "key.list": ["key", "list"],
    "key.revoke": ["key", "revoke", "2"],
    "agent.revoke": ["agent", "revoke", "a1"],
    "agent.approve": ["agent", "approve", "a1"],
    "agent.merge": ["agent", "merge", "a1"],
    "agent.rm": ["agent", "rm", "a1"],
    "hook.add": ["hooks", "add", "audit", "--trigger", "after-task", "--url", "https://127.0.0.1:8443/"],
    "hook.list": ["hooks", "list"],
    "hook.get": ["hooks", "show", "audit"],
    "hook.enable": ["hooks", "enable", "audit"],
    "hook.disable": ["hooks", "disable", "audit"],
    "hook.rm": ["hooks", "rm", "audit"],
    "hook.test": ["hooks", "test", "audit"],
    "hook.runs": ["hooks", "runs", "audit"],
    "hook.fingerprint": ["hooks", "fingerprint", "https://127.0.0.1:8443"],
    "agent.get": ["agent", "show", "a1"],
    "config.set": ["config", "set", "--tag", "web", "state_interval=1m"],
    "config.unset": ["config", "unset", "--agent", "a1", "app.mode"],
    "config.get": ["config", "show", "a1"],
    "config.drift": ["config", "drift"],
}


def test_every_method_has_a_command_line() -> None:
    assert set(ARGV) == set(METHODS)


@pytest.mark.parametrize("name", sorted(ARGV))
def test_each_command_calls_a_method_it_is_bound_to(name: str) -> None:
    args: argparse.Namespace = build_parser().parse_args(ARGV[name])
    args.stdin = io.StringIO()
    request = plan(args)
    assert (request.method, request.answers) == (name, METHODS[name])
    assert plans[METHODS[name]] is COMMANDS[args.cmd]
