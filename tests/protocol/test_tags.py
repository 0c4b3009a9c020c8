"""The one tag rule (``tether.protocol.tags``): charset, length, first character, count."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether.protocol import ErrorCode, ProtocolError
from tether.protocol.tags import (
    MAX_TAG_LENGTH,
    MAX_TAGS_PER_AGENT,
    RULE,
    SEPARATOR,
    check_tag,
    check_tag_count,
    check_tags,
    is_tag,
    tag_problem,
)


@pytest.mark.parametrize("tag", ["web", "W", "7", "dc:paris-1", "rack_2.b", "a" * 64, "0-", "env:prod"])
def test_tags_that_keep_the_rule(tag: str) -> None:
    assert tag_problem(tag) is None and is_tag(tag) and check_tag(tag) == tag


@pytest.mark.parametrize("tag", [
    "", "a" * 65, "two words", "a,b", "-web", ".web", ":web", "_web", "web\n", "\x1b[2Jx", "wéb", "a/b",
    "a;b", "a\tb", "\uff57\uff45\uff42", "web\u200b",
])
def test_tags_that_break_it_are_named_with_the_rule(tag: str) -> None:
    problem = tag_problem(tag)
    assert problem == f"invalid tag {tag!r}: {RULE}"
    assert not is_tag(tag)
    with pytest.raises(ProtocolError) as caught:
        check_tag(tag)
    assert caught.value.code is ErrorCode.INVALID_PARAMS and caught.value.message == problem


def test_the_rule_in_words() -> None:
    assert RULE == "a tag is 1-64 characters of letters, digits and . _ : -, starting with a letter or a digit"
    assert MAX_TAG_LENGTH == MAX_TAGS_PER_AGENT == 64


def test_a_huge_tag_is_shown_cut_and_a_non_string_is_refused() -> None:
    problem = tag_problem("x" * 10_000)
    assert problem is not None and len(problem) < 300 and "x" * 128 + "...'" in problem
    assert tag_problem(5) == f"invalid tag 5: {RULE}"


def test_check_tags_sorts_dedups_and_takes_the_caller_code() -> None:
    assert check_tags(["web", "db", "web"]) == ["db", "web"]
    assert check_tags([f"t{i}" for i in range(MAX_TAGS_PER_AGENT)] * 2) == sorted(f"t{i}" for i in range(64))
    with pytest.raises(ProtocolError) as caught:
        check_tags(["ok", "not ok"], ErrorCode.BAD_HELLO)
    assert caught.value.code is ErrorCode.BAD_HELLO and "invalid tag 'not ok'" in caught.value.message
    with pytest.raises(ProtocolError) as caught:
        check_tags([f"t{i}" for i in range(MAX_TAGS_PER_AGENT + 1)])
    assert caught.value.message == "that is 65 tags; an agent carries at most 64"


def test_check_tag_count_names_whose() -> None:
    check_tag_count(MAX_TAGS_PER_AGENT)
    with pytest.raises(ProtocolError) as caught:
        check_tag_count(65, whose="agent a1")
    assert caught.value.message == "agent a1 would carry 65 tags; an agent carries at most 64"


@given(st.text(max_size=80))
def test_no_tag_holds_the_separator_a_space_or_a_control_character(text: str) -> None:
    if is_tag(text):
        assert SEPARATOR not in text and not any(c.isspace() or not c.isprintable() for c in text)
        assert 1 <= len(text) <= MAX_TAG_LENGTH and text[0].isalnum() and text.isascii()
