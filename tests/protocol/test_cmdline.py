"""LimaCharlie-style command lines split into command and args."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether.protocol import ErrorCode, ProtocolError
from tether.protocol.cmdline import parse_command_line


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
