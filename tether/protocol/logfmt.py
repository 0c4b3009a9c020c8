"""One log format for tetherd and the agent: logfmt lines, or JSON lines.

Every line is one event (STYLE "Logging")::

    ts=2025-06-01T10:00:00.123Z level=info logger=tether.daemon event=listening url=ws://127.0.0.1:8765

Promises:

* A value that comes from a peer (a hostname, a tag, an error text) can never start a new
  line or a new field: a value with a space, ``=``, ``"``, ``\\`` or any character that is
  not printable (newline, escape, bidi override ...) is written as a JSON string with those
  characters escaped (``\\n``, ``\\u001b``), so one record is one line whatever it holds.
* Call sites keep plain ``logging`` calls (``log.info("event=x host=%s", hostname)``):
  :class:`LogfmtFormatter` quotes each ``%``-argument by the rule above before it is
  put into the message. Numbers pass as they are, so ``%d`` and ``%.1f`` still work.
* A message that is not in ``event=`` form (a library's own logger) becomes one quoted
  ``msg=`` field.
* ``json_lines=True`` writes the same fields as one JSON object per line
  (``tetherd serve --json``); :func:`parse` reads a logfmt line back into its fields.

This module lives in ``tether.protocol`` because both the daemon and the agent use it and
may import nothing else of each other; it does no I/O and reads no clock (the time is the
record's).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterable, Mapping
from typing import Any

_SPECIAL = frozenset(' "=\\')


def quote(value: object) -> str:
    """One value as logfmt: bare when that is unambiguous, else a JSON string with every
    character that is not printable escaped."""
    if isinstance(value, float):
        text = f"{value:.3f}".rstrip("0").rstrip(".") if value == value else "nan"
    elif isinstance(value, list | tuple | set | frozenset):
        text = ",".join(str(v) for v in value)
    elif isinstance(value, BaseException):
        text = f"{type(value).__name__}: {value}" if str(value) else type(value).__name__
    else:
        text = str(value)
    if text and text.isprintable() and _SPECIAL.isdisjoint(text):
        return text
    return _printable_json(text)


def _escape(ch: str) -> str:
    code = ord(ch)
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    code -= 0x10000  # JSON spells a character beyond the BMP as a surrogate pair
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def _printable_json(value: object) -> str:
    """``value`` as JSON in which every character is printable: readable Unicode stays,
    anything that could end or rewrite a line is escaped."""
    return "".join(ch if ch.isprintable() else _escape(ch) for ch in json.dumps(value, ensure_ascii=False))


def kv(event: str, fields: Iterable[tuple[str, object]]) -> str:
    """``event=<event> k=v ...``, each value quoted by :func:`quote`; ``None`` values are
    left out."""
    parts = [f"event={event}"]
    parts.extend(f"{k}={quote(v)}" for k, v in fields if v is not None)
    return " ".join(parts)


class _Quoted:
    """A ``%``-argument rendered as a logfmt value for ``%s`` and ``%r`` alike."""

    __slots__ = ("text",)

    def __init__(self, value: object) -> None:
        self.text = quote(value)

    def __str__(self) -> str:
        return self.text

    __repr__ = __str__


def _quoted_arg(value: object) -> object:
    return value if isinstance(value, int | float) else _Quoted(value)


def message(record: logging.LogRecord) -> str:
    """The record's message in logfmt: an ``event=`` template with each argument quoted,
    or any other message as one ``msg=`` field."""
    template = str(record.msg)
    if not template.startswith("event="):
        return f"msg={quote(record.getMessage())}"
    args = record.args
    if not args:
        return template
    if isinstance(args, Mapping):
        return template % {k: _quoted_arg(v) for k, v in args.items()}
    return template % tuple(_quoted_arg(v) for v in args)


def timestamp(created: float) -> str:
    """``2025-06-01T10:00:00.123Z``: UTC, milliseconds, the zone said."""
    whole = int(created)
    millis = min(999, int((created - whole) * 1000))
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{millis:03d}Z"


_TOKEN = re.compile(r'\s*([^\s=]+)=("(?:[^"\\]|\\.)*"|\S*)|\s*(\S+)')


def parse(line: str) -> dict[str, str]:
    """A logfmt line's fields, in order; quoted values decoded. Words that are not
    ``key=value`` are gathered, space-separated, into ``msg``."""
    fields: dict[str, str] = {}
    words: list[str] = []
    for key, value, word in _TOKEN.findall(line):
        if word:
            words.append(word)
        elif value.startswith('"'):
            try:
                fields[key] = json.loads(value)
            except ValueError:  # not one of ours: an unclosed quote, kept as written
                fields[key] = value
        else:
            fields[key] = value
    if words:
        fields["msg"] = " ".join([fields["msg"], *words] if "msg" in fields else words)
    return fields


class LogfmtFormatter(logging.Formatter):
    """``ts=... level=... logger=... <message>``; a traceback is folded into one quoted
    ``exc=`` field. With ``json_lines``, the same fields as one JSON object per line."""

    def __init__(self, *, json_lines: bool = False) -> None:
        super().__init__()
        self.json_lines = json_lines

    def format(self, record: logging.LogRecord) -> str:
        head = f"ts={timestamp(record.created)} level={record.levelname.lower()} logger={quote(record.name)} "
        line = head + message(record)
        if record.exc_info:
            line += " exc=" + quote(self.formatException(record.exc_info))
        if not self.json_lines:
            return line
        fields: dict[str, Any] = parse(line)
        return _printable_json(fields)
