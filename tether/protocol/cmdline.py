"""LimaCharlie-style command lines: ``"file_get --path /etc/hosts"`` -> command + args.

``--name value`` and ``--name=value`` give ``{"name": "value"}``; a bare ``--flag`` (last,
or followed by another ``--option``) gives ``true``; positionals are collected in ``"argv"``.
Values stay strings: the command decides what they mean.
"""

from __future__ import annotations

import json
import shlex
from typing import Any

from .errors import ErrorCode, ProtocolError

MAX_COMMAND_LINE = 8192
"""Characters in a command line. shlex takes time quadratic in a word's length (a 1 MB line
held the event loop for seconds); large values belong in the task's JSON args."""


def parse_command_line(line: str) -> tuple[str, dict[str, Any]]:
    if len(line) > MAX_COMMAND_LINE:
        raise ProtocolError(ErrorCode.INVALID_PARAMS, f"the command line is {len(line)} characters long; the limit "
                                                      f"is {MAX_COMMAND_LINE} (pass large values in args)")
    try:
        words = shlex.split(line)
    except ValueError as exc:
        raise ProtocolError(ErrorCode.INVALID_PARAMS, f"cannot parse command line {line!r}: {exc}") from None
    if not words or words[0].startswith("-"):
        raise ProtocolError(ErrorCode.INVALID_PARAMS, f"command line {line!r} does not start with a command name")
    command, rest = words[0], words[1:]
    args: dict[str, Any] = {}
    argv: list[str] = []
    i = 0
    while i < len(rest):
        word = rest[i]
        if word.startswith("--") and len(word) > 2:
            name, eq, value = word[2:].partition("=")
            if eq:
                args[name] = value
            elif i + 1 < len(rest) and not rest[i + 1].startswith("--"):
                args[name] = rest[i + 1]
                i += 1
            else:
                args[name] = True
        else:
            argv.append(word)
        i += 1
    if argv:
        args["argv"] = argv
    return command, args


def format_command_line(command: str, args: dict[str, Any]) -> str:
    """The command line that says ``command`` and its ``args`` (what ``tetherctl tasks``
    and LimaCharlie's ``list`` show): the inverse of :func:`parse_command_line` for args it
    makes (``true`` -> a bare ``--flag``, ``argv`` -> positionals, written first so that a
    flag never takes one as its value); any other value is written as JSON."""
    words = [shlex.quote(command)]
    argv = args.get("argv")
    positional = isinstance(argv, list) and all(isinstance(v, str) and not v.startswith("-") for v in argv)
    if positional:
        words += [shlex.quote(v) for v in argv]  # type: ignore[union-attr]
    for name, value in args.items():
        if name == "argv" and positional:
            continue
        if value is True:
            words.append(f"--{name}")
        else:
            text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)
            words.append(f"--{name}={shlex.quote(text)}" if text.startswith("-") else f"--{name} {shlex.quote(text)}")
    return " ".join(words)
