"""LimaCharlie-style command lines split into command and args."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether.protocol import ErrorCode, ProtocolError
from tether.protocol.cmdline import format_command_line, parse_command_line


@pytest.mark.parametrize(
    ("line", "command", "args"),
    [
        ("os_version", "os_version", {}),
        ("  os_version  ", "os_version", {}),
        ("file_get --path /etc/hosts", "file_get", {"path": "/etc/hosts"}),
        ("file_get --path=/etc/hosts", "file_get", {"path": "/etc/hosts"}),
        ("file_get --path=", "file_get", {"path": ""}),
        ("file_get --path='/a b/c'", "file_get", {"path": "/a b/c"}),
        ('file_get --path "/a b/c"', "file_get", {"path": "/a b/c"}),
        ("scan --deep", "scan", {"deep": True}),
        ("scan --deep --path /tmp", "scan", {"deep": True, "path": "/tmp"}),
        ("scan --path /tmp --deep", "scan", {"path": "/tmp", "deep": True}),
        ("run a b --x 1 c", "run", {"x": "1", "argv": ["a", "b", "c"]}),
        ("run -v", "run", {"argv": ["-v"]}),
        ("run -- x", "run", {"argv": ["--", "x"]}),
        ("run --x 1 --x 2", "run", {"x": "2"}),
        ("run --n 5", "run", {"n": "5"}),
        ("run --x -1", "run", {"x": "-1"}),
    ],
)
def test_command_lines(line: str, command: str, args: dict[str, Any]) -> None:
    assert parse_command_line(line) == (command, args)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("", "does not start with a command name"),
        ("   ", "does not start with a command name"),
        ("--path /etc", "does not start with a command name"),
        ("-v os_version", "does not start with a command name"),
        ("file_get --path '/etc/hosts", "cannot parse command line"),
        ('file_get "', "cannot parse command line"),
    ],
)
def test_bad_command_lines(line: str, message: str) -> None:
    with pytest.raises(ProtocolError, match=message) as caught:
        parse_command_line(line)
    assert caught.value.code is ErrorCode.INVALID_PARAMS


NAMES = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)
VALUES = st.from_regex(r"[A-Za-z0-9/._][A-Za-z0-9/._ -]{0,10}", fullmatch=True)


@given(command=NAMES, options=st.dictionaries(NAMES, VALUES, max_size=5))
def test_quoted_options_come_back_as_given(command: str, options: dict[str, str]) -> None:
    line = command + "".join(f" --{k} '{v}'" for k, v in options.items())
    assert parse_command_line(line) == (command, options)


@given(command=NAMES, args=st.dictionaries(NAMES.filter(lambda n: n != "argv"),
                                           st.one_of(VALUES, st.just(True), st.integers(), st.lists(st.integers())),
                                           max_size=5),
       argv=st.lists(VALUES, max_size=3))
def test_a_formatted_command_line_says_the_same_command_and_args(
    command: str, args: dict[str, object], argv: list[str]
) -> None:
    given = {**args, **({"argv": argv} if argv else {})}
    line = format_command_line(command, given)
    parsed_command, parsed = parse_command_line(line)
    expected = {k: v if isinstance(v, str) or v is True else json.dumps(v) for k, v in args.items()}
    expected.update({"argv": argv} if argv else {})
    assert (parsed_command, parsed) == (command, expected)


def test_formatted_command_lines_read_as_an_operator_wrote_them() -> None:
    assert format_command_line("file_get", {"path": "/etc/my hosts", "force": True}) == \
        "file_get --path '/etc/my hosts' --force"
    assert format_command_line("scan", {"depth": 3, "argv": ["/a", "b c"]}) == "scan /a 'b c' --depth 3"
    assert format_command_line("x", {"argv": [1]}) == "x --argv '[1]'"
    assert format_command_line("x", {"v": "-1"}) == "x --v=-1"
    assert parse_command_line(format_command_line("x", {"argv": ["-n"]})) == ("x", {"argv": '["-n"]'})
