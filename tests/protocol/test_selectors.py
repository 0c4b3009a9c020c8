"""Selectors (LimaCharlie sensor selectors, go-bexpr syntax): property tests against a
reference evaluator, and bad input with the column of the problem."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.protocol.errors import ErrorCode
from tether.protocol.selectors import (
    FIELDS,
    MAX_DEPTH,
    MAX_SELECTOR,
    Facts,
    SelectorError,
    compile_selector,
    evaluate,
    lc_arch,
    lc_platform,
    parse,
    regex_problem,
)

# -- a reference: expressions generated as data, rendered to text, judged directly ---------


@dataclass(frozen=True)
class Case:
    text: str
    judge: Any  # Facts -> bool, written without the module's evaluator


WORDS = st.sampled_from(["web-01", "db", "prod", "web", "linux", "windows", "macos", "x64", "arm64", "a.b", "x_y", "A1"])
QUOTES = st.sampled_from(['"', "'", "`"])


def quoted(value: str, quote: str) -> str:
    return f"{quote}{value}{quote}"


def field_value(facts: Facts, name: str) -> Any:
    machine = facts.platform.split("-")[1] if "-" in facts.platform else ""
    return {"sid": facts.sid, "hostname": facts.hostname, "platform": facts.platform,
            "arch": {"x86_64": "x64", "amd64": "x64", "arm64": "arm64"}.get(machine, machine),
            "plat": {"linux": "linux", "windows": "windows", "darwin": "macos"}.get(
                facts.platform.split("-")[0], facts.platform.split("-")[0]),
            "tags": facts.tags}[name]


@st.composite
def selectors(draw: Any, depth: int = 0) -> Case:
    kind = draw(st.sampled_from(["leaf"] * 3 + (["and", "or", "not", "paren"] if depth < 4 else [])))
    if kind == "and":
        a, b = draw(selectors(depth + 1)), draw(selectors(depth + 1))
        return Case(f"({a.text}) and ({b.text})", lambda f: a.judge(f) and b.judge(f))
    if kind == "or":
        a, b = draw(selectors(depth + 1)), draw(selectors(depth + 1))
        return Case(f"({a.text}) OR ({b.text})", lambda f: a.judge(f) or b.judge(f))
    if kind == "not":
        a = draw(selectors(depth + 1))
        return Case(f"not ({a.text})", lambda f: not a.judge(f))
    if kind == "paren":
        a = draw(selectors(depth + 1))
        return Case(f"( {a.text} )", a.judge)
    name = draw(st.sampled_from(FIELDS))
    value = draw(WORDS)
    q = draw(QUOTES)
    op = draw(st.sampled_from(["==", "!=", "in", "not in", "contains", "matches", "empty", "not empty"]))

    def scalar_eq(f: Facts) -> bool:
        actual = field_value(f, name)
        return value in actual if isinstance(actual, frozenset) else actual == value

    if op == "==":
        return Case(f"{name} == {quoted(value, q)}", scalar_eq)
    if op == "!=":
        return Case(f"{name}!={value}", lambda f: not scalar_eq(f))
    if op in ("in", "not in"):
        neg = op == "not in"
        return Case(f"{quoted(value, q)} {op} {name}", lambda f: (value in field_value(f, name)) != neg)
    if op == "contains":
        return Case(f"{name} contains {quoted(value, q)}", lambda f: value in field_value(f, name))
    if op == "matches":
        pattern = "^" + re.escape(value[:2])

        def judge(f: Facts) -> bool:
            actual = field_value(f, name)
            items = actual if isinstance(actual, frozenset) else [actual]
            return any(str(x).startswith(value[:2]) for x in items)

        return Case(f"{name} matches {quoted(pattern, q)}", judge)
    neg = op == "not empty"
    return Case(f"{name} is {'not ' if neg else ''}empty", lambda f: bool(field_value(f, name)) == neg)


FACTS = st.builds(
    Facts,
    sid=st.sampled_from(["a1", "web", "prod"]),
    hostname=st.sampled_from(["web-01", "db-02", "", "prod"]),
    platform=st.sampled_from(["linux-x86_64", "windows-amd64", "darwin-arm64", ""]),
    tags=st.frozensets(WORDS, max_size=3),
)


@settings(max_examples=400)
@given(selectors(), FACTS)
def test_a_selector_means_what_the_reference_says(test: Case, facts: Facts) -> None:
    assert evaluate(parse(test.text), facts) == test.judge(facts), test.text


@settings(max_examples=300)
@given(st.lists(st.sampled_from([*"ab =!()\"'`-*.^$[", " and ", " or ", "not ", " in ", "tags", "plat", "is",
                                                             " empty", "=="]), max_size=20).map("".join))
def test_any_text_either_parses_or_is_refused_with_a_column(text: str) -> None:
    try:
        parse(text)
    except SelectorError as exc:
        assert exc.code is ErrorCode.INVALID_PARAMS
        assert 1 <= exc.column <= len(text) + 1
        assert f"column {exc.column}" in exc.message


# -- what an operator writes ----------------------------------------------------------------

WEB = Facts(sid="a1", hostname="web-01", platform="linux-x86_64", tags=frozenset({"prod", "web"}))
DB = Facts(sid="b2", hostname="db-02", platform="windows-amd64", tags=frozenset({"staging"}))
MAC = Facts(sid="c3", hostname="mac", platform="darwin-arm64")


@pytest.mark.parametrize(("selector", "selected"), [
    ("plat == windows", ["b2"]),
    ("plat == linux or plat == macos", ["a1", "c3"]),
    ('hostname == "web-01"', ["a1"]),
    ('hostname matches "web-*"', ["a1"]),
    ('hostname matches "^db-[0-9]+$"', ["b2"]),
    ('"prod" in tags', ["a1"]),
    ("`prod` in tags and not plat == windows", ["a1"]),
    ('sid == "c3"', ["c3"]),
    ("not (plat == linux and prod in tags)", ["b2", "c3"]),
    ("tags is empty", ["c3"]),
    ("tags is not empty", ["a1", "b2"]),
    ('"web" in hostname', ["a1"]),
    ("hostname not matches web", ["b2", "c3"]),
    ("hostname not contains web", ["b2", "c3"]),
    ('"prod" not in tags', ["b2", "c3"]),
    ("platform == linux-x86_64", ["a1"]),
    ("arch == x64", ["a1", "b2"]),
    ("arch == arm64 and plat == macos", ["c3"]),
    ("tags == staging", ["b2"]),
    ("tags != staging", ["a1", "c3"]),
    ("tags matches ^sta", ["b2"]),
    ("plat == linux and prod in tags or sid == c3", ["a1", "c3"]),  # and binds tighter than or
    ("plat == linux AND prod In tags", ["a1"]),  # keywords in any case
])
def test_selectors_an_operator_writes(selector: str, selected: list[str]) -> None:
    match = compile_selector(selector)
    assert [f.sid for f in (WEB, DB, MAC) if match(f)] == selected


def test_limacharlie_architecture_names() -> None:
    assert [lc_arch(p) for p in ("linux-x86_64", "windows-AMD64", "darwin-arm64", "linux-aarch64", "linux-i686",
                                 "linux-riscv64", "sunos")] == ["x64", "x64", "arm64", "arm64", "x86", "riscv64", ""]


def test_limacharlie_platform_names() -> None:
    assert [lc_platform(p) for p in ("linux-x86_64", "Windows-AMD64", "darwin-arm64", "freebsd-amd64", "sunos")] == [
        "linux", "windows", "macos", "freebsd", "sunos"]


@pytest.mark.parametrize(("selector", "column", "words"), [
    ("", 1, "empty"),
    ("   ", 1, "empty"),
    ("plat = windows", 6, "unexpected character '='"),
    ("plat == ", 9, "expected a value after =="),
    ("plat == and", 9, "expected a value after =="),
    ('hostname == "web', 13, 'string opened with " is not closed'),
    ("os == linux", 1, "unknown field 'os'"),
    ("(plat == linux", 15, "expected ')' to close the '(' at column 1"),
    ("plat == linux)", 14, "expected 'and', 'or' or the end"),
    ("plat == linux and", 18, "expected a test"),
    ("prod in flags", 9, "unknown field 'flags'"),
    ("prod in (", 9, "expected a field"),
    ("hostname matches '(web'", 18, "bad regular expression"),
    ("hostname like web", 10, "expected ==, !=, matches, contains or is after 'hostname'"),
    ("tags is full", 9, "expected 'empty'"),
    ("hostname not like x", 14, "expected ==, !=, matches, contains or is"),
    ("plat == linux plat == windows", 15, "expected 'and', 'or' or the end"),
    ("== linux", 1, "expected a test"),
    ("'plat' == linux", 1, "unknown field 'plat'"),  # a quoted word is a value, not a field
    ("plat == linux or !", 18, "unexpected character '!'"),
    ('"bad tag" in tags', 1, "invalid tag 'bad tag': a tag is 1-64 characters"),
    ("tags contains '-x'", 15, "invalid tag '-x'"),
    ("tags == 'a,b'", 9, "invalid tag 'a,b'"),
    ("PLAT == linux", 1, "unknown field 'PLAT'"),  # fields as written, as in go-bexpr
])
def test_bad_selectors_say_where(selector: str, column: int, words: str) -> None:
    with pytest.raises(SelectorError) as info:
        parse(selector)
    assert info.value.column == column, info.value.message
    assert words in info.value.message
    assert f"at column {column}" in info.value.message


def test_limits() -> None:
    with pytest.raises(SelectorError, match=f"at most {MAX_SELECTOR} characters"):
        parse("plat == linux or " * 1000 + "plat == linux")
    deep = "not " * (MAX_DEPTH + 1) + "plat == linux"
    with pytest.raises(SelectorError, match="nested more than"):
        parse(deep)
    assert evaluate(parse("not " * (MAX_DEPTH - 1) + "plat == linux"), WEB) is False


@pytest.mark.parametrize("pattern,problem", [
    ("(a+)+$", "repeats a repetition"),
    ("(a*b)*", "repeats a repetition"),
    ("(?>a+)+", "repeats a repetition"),
    ("(a|aa)*", "repeats an alternation"),
    ("web|(x+)+", "repeats a repetition"),
    (r"(a)\1", "backreference"),
    (r"(a)?(?(1)b|c)", "conditional group"),
    ("(?=web)w", "lookaround"),
    ("(?<!x)y", "lookaround"),
])
def test_a_regex_that_could_backtrack_for_ever_is_refused_at_its_column(pattern: str, problem: str) -> None:
    """go-bexpr's matches is Go's RE2 (linear time); Python's re backtracks, and tetherd
    evaluates the pattern against every agent that connects: (a+)+$ against 30 a's and a b
    would hold its event loop for minutes."""
    with pytest.raises(SelectorError) as caught:
        parse(f'hostname matches "{pattern}"')
    assert problem in caught.value.message and "column 18" in caught.value.message


@pytest.mark.parametrize("pattern", ["^web-[0-9]+$", "prod|staging", "(foo|bar)-db", "a{2,5}b*", "(?>ab)",
                                     "[a-z]+(-[0-9]+)?", "(ab)+"])
def test_ordinary_regexes_are_taken(pattern: str) -> None:
    assert regex_problem(pattern) is None
    parse(f'hostname matches "{pattern}"')
