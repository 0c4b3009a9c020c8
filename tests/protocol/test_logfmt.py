"""The one log format of tetherd and the agent: values that come from peers cannot forge
lines or fields (issue 15.8), and logfmt and JSON lines say the same thing."""

from __future__ import annotations

import json
import logging
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether.protocol.logfmt import LogfmtFormatter, kv, message, parse, quote, timestamp


def record(msg: object, *args: object, name: str = "tether.server", level: int = logging.INFO,
           exc_info: object = None) -> logging.LogRecord:
    rec = logging.LogRecord(name, level, __file__, 1, msg, args or None, exc_info)  # type: ignore[arg-type]
    rec.created = 1_750_000_000.25
    return rec


@pytest.mark.parametrize(("value", "text"), [
    ("web-01", "web-01"),
    (3, "3"),
    (0.25, "0.25"),
    (2.0, "2"),
    (float("nan"), "nan"),
    ([1, 2], "1,2"),
    ("", '""'),
    ("two words", '"two words"'),
    ('say "hi"', '"say \\"hi\\""'),
    ("a=b", '"a=b"'),
    ("back\\slash", '"back\\\\slash"'),
    ("host\nts=2020 level=error event=forged", '"host\\nts=2020 level=error event=forged"'),
    ("\x1b[2Kdone", '"\\u001b[2Kdone"'),
    ("rtl\u202eevil", '"rtl\\u202eevil"'),
    ("del\x7f", '"del\\u007f"'),
    ("line\u2028sep", '"line\\u2028sep"'),
    ("tag\U000e0041", '"tag\\udb40\\udc41"'),
    ("hôte-é", "hôte-é"),
    (RuntimeError("boom"), '"RuntimeError: boom"'),
    (TimeoutError(), "TimeoutError"),
])
def test_quote(value: object, text: str) -> None:
    assert quote(value) == text


@given(st.text())
def test_a_quoted_value_is_one_printable_token_that_reads_back(text: str) -> None:
    line = quote(text)
    assert line.isprintable() and (" " not in line or line.startswith('"'))
    assert parse(f"k={line}") == {"k": text}


def test_kv_leaves_out_none() -> None:
    assert kv("x", [("a", 1), ("b", "two words"), ("c", None)]) == 'event=x a=1 b="two words"'


def test_arguments_are_quoted_and_numbers_keep_their_format() -> None:
    rec = record("event=agent_enrolled hostname=%s tags=%s n=%d ms=%.1f err=%r",
                 "evil\nts=x level=error event=forged", ["a b", "c"], 3, 1.25, ValueError("bad thing"))
    assert message(rec) == ('event=agent_enrolled hostname="evil\\nts=x level=error event=forged" '
                            'tags="a b,c" n=3 ms=1.2 err="ValueError: bad thing"')
    assert message(record("event=x a=%(a)s", {"a": "x y"})) == 'event=x a="x y"'
    assert message(record("event=plain")) == "event=plain"


def test_a_foreign_message_is_one_msg_field() -> None:
    assert message(record("connection %s failed\nnext", "1.2.3.4")) == 'msg="connection 1.2.3.4 failed\\nnext"'


def test_the_line_has_a_zoned_timestamp_a_lower_case_level_and_one_line_for_a_traceback() -> None:
    assert timestamp(1_750_000_000.9999) == "2025-06-15T15:06:40.999Z"
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        exc_info = sys.exc_info()
    line = LogfmtFormatter().format(record("event=crash id=%s", "a\nb", level=logging.WARNING, exc_info=exc_info))
    assert line.startswith("ts=2025-06-15T15:06:40.250Z level=warning logger=tether.server event=crash id=\"a\\nb\"")
    assert "\n" not in line and "RuntimeError: boom" in parse(line)["exc"]


def test_json_lines_carry_the_same_fields() -> None:
    line = LogfmtFormatter(json_lines=True).format(
        record("event=session_open host=%s n=%d", "web\u202e01", 2, level=logging.ERROR))
    assert "\n" not in line and "\u202e" not in line
    assert json.loads(line) == {"ts": "2025-06-15T15:06:40.250Z", "level": "error", "logger": "tether.server",
                                "event": "session_open", "host": "web\u202e01", "n": "2"}


def test_parse_keeps_free_words_and_what_it_cannot_decode() -> None:
    assert parse('event=x (kept for later) a="unclosed b=') == {
        "event": "x", "a": '"unclosed', "b": "", "msg": "(kept for later)"}
    assert parse('msg="m" tail') == {"msg": "m tail"}
