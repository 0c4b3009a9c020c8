"""The command-line flags the three tools share (issue 16.11)."""

from __future__ import annotations

import argparse

import pytest

from tether.protocol import flags


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30), ("5m", 300), ("1h30m", 5400), ("7d", 604800),
                                                ("90", 90), ("0.5", 0.5)])
def test_one_duration_syntax(text: str, seconds: float) -> None:
    assert flags.duration(text) == seconds


@pytest.mark.parametrize(("text", "words"), [("5x", "invalid duration '5x': use e.g. 30s"), ("0", "more than 0 s"),
                                             ("-5m", "invalid duration '-5m'")])
def test_a_bad_duration_says_what_to_give(text: str, words: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=words):
        flags.duration(text)


def test_whole_seconds_rounds_up_and_numbers_are_whole_and_positive() -> None:
    assert flags.whole_seconds("1.2") == 2 and flags.whole_seconds("1h") == 3600
    assert flags.positive_int("3") == 3
    for text, words in (("x", "give a whole number"), ("0", "it must be 1 or more")):
        with pytest.raises(argparse.ArgumentTypeError, match=words):
            flags.positive_int(text)


def test_tags_keep_the_tag_rule() -> None:
    assert flags.tag("web-01") == "web-01"
    with pytest.raises(argparse.ArgumentTypeError, match="invalid tag 'a,b'"):
        flags.tag("a,b")


def parse(add: object, *argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add(p)  # type: ignore[operator]
    return p.parse_args(list(argv))


def test_key_flags_become_key_create_params() -> None:
    assert flags.key_params(parse(flags.add_key_flags)) == {"tags": []}
    args = parse(flags.add_key_flags, "--tag", "web", "--allow-requested-tags", "--expires-in", "7d", "--uses", "5")
    assert flags.key_params(args) == {"tags": ["web"], "allow_requested_tags": True, "expires_in": 604800,
                                      "uses": 5}


def test_token_flags_default_to_operator() -> None:
    assert flags.token_params(parse(flags.add_token_flags)) == {"role": "operator", "label": ""}
    assert flags.token_params(parse(flags.add_token_flags, "--role", "admin", "--label", "x")) == {
        "role": "admin", "label": "x"}


def test_examples_block() -> None:
    assert flags.examples("a b", "c") == "examples:\n  a b\n  c\n"
