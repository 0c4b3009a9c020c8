"""What the three tools' command lines have in common (issue 16, items 11-13): one duration
syntax for every duration flag, no internal names in errors, --version, --json before or
after the command, examples in every command's --help and the exit codes that apply to it."""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tether.agent import cli as agent_cli
from tether.console import parser as tetherctl_cli
from tether.console import plan as tetherctl_plan
from tether.daemon import cli as tetherd_cli
from tether.protocol import flags

BIN = Path(sys.executable).parent
PARSERS = {"tetherd": tetherd_cli.build_parser, "tetherctl": tetherctl_cli.build_parser,
           "tether-agent": agent_cli.build_parser}


def commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[
        tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every (sub)command parser with the words that reach it."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from commands(sub, (*path, name))


def leaves() -> Iterator[tuple[str, tuple[str, ...], argparse.ArgumentParser]]:
    for tool, build in PARSERS.items():
        for path, parser in commands(build()):
            if path and not any(isinstance(a, argparse._SubParsersAction) for a in parser._actions):
                yield tool, path, parser


DURATIONS = {"ttl", "expires_in", "every", "timeout", "grace", "backoff_base", "backoff_cap", "key_expires_in"}


def test_every_duration_flag_of_every_tool_takes_one_syntax() -> None:
    seen: set[str] = set()
    for tool, path, parser in leaves():
        for action in parser._actions:
            if action.dest in DURATIONS:
                seen.add(action.dest)
                assert action.metavar == "DURATION", (tool, path, action.dest)
                assert action.type is not None
                assert [action.type(text) for text in ("30s", "5m", "1h30m", "7d", "90")] == [
                    30, 300, 5400, 604800, 90], (tool, path, action.dest)
    assert seen == DURATIONS


def test_no_error_names_an_internal_function() -> None:
    """argparse says `invalid <function name> value` when a type raises ValueError; ours
    raise ArgumentTypeError with words instead."""
    for _, _, parser in leaves():
        for action in parser._actions:
            if callable(action.type) and action.type is not Path:  # a path is checked when used
                with pytest.raises(argparse.ArgumentTypeError):
                    action.type("not-a-value!")  # not ValueError: no "invalid _positive value"


def test_key_create_and_token_create_are_the_same_in_tetherd_and_tetherctl() -> None:
    """The same flag names, defaults, types, choices and help (the records they make:
    tests/e2e/test_credentials.py)."""
    def options(tool: str, path: tuple[str, ...]) -> dict[str, object]:
        parser = dict(commands(PARSERS[tool]()))[path]
        return {a.option_strings[-1]: (a.option_strings, a.dest, a.default, a.type, a.choices, a.nargs, a.metavar,
                                       a.help, type(a)) for a in parser._actions
                if a.option_strings and a.dest not in ("help", "json", "data_dir", "config", "server", "token", "ca")}

    for what in flags.CREDENTIALS:
        path = (what, "create")
        assert options("tetherd", path) == options("tetherctl", path), path
        assert set(options("tetherd", path)) == {"--tag", "--allow-requested-tags", "--expires-in", "--uses"} \
            if what == "key" else {"--role", "--label"}
        assert dict(commands(PARSERS["tetherd"]()))[path].get_default("func") is tetherd_cli.cmd_create
    assert options("tetherd", ("token", "create"))["--role"][2] == "operator"


def test_both_tools_turn_the_same_flags_into_the_same_request() -> None:
    for what, argv in {"key": ["--tag", "web", "--uses", "2", "--expires-in", "1h", "--allow-requested-tags"],
                       "token": ["--role", "viewer", "--label", "ci"]}.items():
        tetherd = PARSERS["tetherd"]().parse_args([what, "create", *argv])
        tetherctl = PARSERS["tetherctl"]().parse_args([what, "create", *argv])
        request = tetherctl_plan.plan(tetherctl)
        assert request.answers is flags.CREDENTIALS[what].method
        assert request.params == flags.CREDENTIALS[tetherd.command].params(tetherd)


@pytest.mark.parametrize("tool", list(PARSERS))
def test_version(tool: str) -> None:
    out = subprocess.run([str(BIN / tool), "--version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == f"{tool} 0.1.0"


@pytest.mark.parametrize(("tool", "argv"), [("tetherd", ["token", "create"]), ("tetherctl", ["agents"]),
                                            ("tether-agent", ["status"])])
def test_json_before_or_after_the_command(tool: str, argv: list[str]) -> None:
    parser = PARSERS[tool]()
    assert parser.parse_args(argv).json is False
    assert parser.parse_args(["--json", *argv]).json is True
    assert parser.parse_args([*argv, "--json"]).json is True


def test_every_command_shows_examples_and_only_the_exit_codes_that_apply() -> None:
    for tool, path, parser in leaves():
        text = parser.format_help()
        where = f"{tool} {' '.join(path)}"
        assert "examples:\n  " + tool in text, where
        if tool == "tetherctl":
            assert ("124" in text) == (path in (("wait",), ("watch",))), where
            assert "TETHER_URL" in text, where
        if tool == "tether-agent":
            assert ("  3  the daemon ended the session" in text) == (path == ("run",)), where
