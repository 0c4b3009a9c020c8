"""LimaCharlie sensor selectors: ``plat == windows and "prod" in tags``, parsed and evaluated.

LimaCharlie's reliable tasking takes a ``selector`` on ``task``, ``list`` and ``untask``: an
expression over a sensor's facts, in the syntax of HashiCorp's go-bexpr, which LimaCharlie
uses. This module is a hand-written recursive-descent parser for the part of that syntax a
selector needs, and a pure evaluator over an agent's :class:`Facts`. No dependency: the
agent and tetherctl import this package too, and a parsing library for ~150 lines of
grammar would be weight on every endpoint.

Grammar (keywords are case-insensitive; ``and`` binds tighter than ``or``)::

    selector   := or_expr END
    or_expr    := and_expr ("or" and_expr)*
    and_expr   := not_expr ("and" not_expr)*
    not_expr   := "not" not_expr | "(" or_expr ")" | match
    match      := FIELD ("==" | "!=") value
                | FIELD ["not"] ("matches" | "contains") value
                | value ["not"] "in" FIELD
                | FIELD "is" ["not"] "empty"
    value      := STRING | WORD          -- "x", 'x' or `x`; or a bare word such as windows
    FIELD      := sid | hostname | plat | arch | platform | tags

Meaning, as in go-bexpr: ``==``/``!=`` compare exactly (case-sensitive); ``matches`` is a
regular-expression search (unanchored, like Go's ``regexp.MatchString``: anchor with ``^``
and ``$``); ``in``/``contains`` test membership of a list (``tags``) or a substring of a
string field; ``is empty`` is true for an empty string or no tags. ``plat`` and ``arch``
are LimaCharlie's names (``windows``, ``linux``, ``macos``; ``x64``, ``x86``, ``arm64``:
:func:`lc_platform`, :func:`lc_arch`), ``platform`` tether's own (``linux-x86_64``). An error names the column (1-based) where the
selector stops making sense.
"""

from __future__ import annotations

import re
import re._constants as _c  # type: ignore[import-not-found]  # a pattern's parse tree: regex_problem
import re._parser as _parser  # type: ignore[import-not-found]
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from .errors import ErrorCode, ProtocolError
from .tags import tag_problem

MAX_SELECTOR = 4096
"""Characters in a selector: enough for any fleet rule, and a bound on parsing work."""
MAX_DEPTH = 64
"""Nesting of parentheses and ``not``: the parser recurses once per level."""

FIELDS = ("sid", "hostname", "plat", "arch", "platform", "tags")
"""The agent facts a selector may name."""

_PLATFORMS = {"windows": "windows", "linux": "linux", "darwin": "macos", "macos": "macos", "freebsd": "freebsd"}
_ARCHES = {"x86_64": "x64", "amd64": "x64", "x64": "x64", "i386": "x86", "i686": "x86", "x86": "x86",
           "aarch64": "arm64", "arm64": "arm64"}


def lc_platform(platform: str) -> str:
    """LimaCharlie's ``plat`` for tether's platform string: ``linux-x86_64`` -> ``linux``,
    ``darwin-arm64`` -> ``macos``, ``windows-amd64`` -> ``windows``; otherwise its first part."""
    system = platform.split("-", 1)[0].lower()
    return _PLATFORMS.get(system, system)


def lc_arch(platform: str) -> str:
    """LimaCharlie's ``arch`` for tether's platform string: ``linux-x86_64`` -> ``x64``,
    ``darwin-arm64`` -> ``arm64``, ``windows-x86`` -> ``x86``; otherwise its second part."""
    machine = platform.split("-", 1)[1].lower() if "-" in platform else ""
    return _ARCHES.get(machine, machine)


@dataclass(frozen=True, slots=True)
class Facts:
    """What a selector is evaluated against: one agent as the daemon knows it."""

    sid: str
    hostname: str = ""
    platform: str = ""
    tags: frozenset[str] = field(default_factory=frozenset)

    def value(self, name: str) -> str | frozenset[str]:
        if name == "tags":
            return self.tags
        if name == "plat":
            return lc_platform(self.platform)
        if name == "arch":
            return lc_arch(self.platform)
        if name == "sid":
            return self.sid
        if name == "hostname":
            return self.hostname
        return self.platform


class SelectorError(ProtocolError):
    """A selector that does not parse; ``column`` is 1-based."""

    def __init__(self, selector: str, column: int, problem: str) -> None:
        super().__init__(ErrorCode.INVALID_PARAMS, f"invalid selector at column {column}: {problem} (in {selector!r})")
        self.column = column
        self.problem = problem


# -- the syntax tree ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Match:
    """One test of one field: ``op`` is ``eq``, ``ne``, ``matches``, ``contains`` or ``empty``."""

    field: str
    op: Literal["eq", "ne", "matches", "contains", "empty"]
    value: str = ""
    negate: bool = False
    pattern: re.Pattern[str] | None = None


@dataclass(frozen=True, slots=True)
class Not:
    operand: Node


@dataclass(frozen=True, slots=True)
class Both:
    left: Node
    right: Node


@dataclass(frozen=True, slots=True)
class Either:
    left: Node
    right: Node


Node = Match | Not | Both | Either


# -- tokens ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Token:
    kind: Literal["word", "string", "op", "(", ")", "end"]
    text: str
    column: int


_WORD = re.compile(r"[^\s()\"'`=!]+")
_OPS = ("==", "!=")


def _tokens(text: str) -> list[_Token]:
    out: list[_Token] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c.isspace():
            i += 1
        elif c in "()":
            out.append(_Token(c, c, i + 1))  # type: ignore[arg-type]
            i += 1
        elif text.startswith(_OPS, i):
            out.append(_Token("op", text[i:i + 2], i + 1))
            i += 2
        elif c in "\"'`":
            end = text.find(c, i + 1)
            if end < 0:
                raise SelectorError(text, i + 1, f"string opened with {c} is not closed")
            out.append(_Token("string", text[i + 1:end], i + 1))
            i = end + 1
        else:
            m = _WORD.match(text, i)
            if m is None:
                raise SelectorError(text, i + 1, f"unexpected character {c!r}")
            out.append(_Token("word", m.group(), i + 1))
            i = m.end()
    out.append(_Token("end", "", len(text) + 1))
    return out


# -- the parser -----------------------------------------------------------------------------


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokens(text)
        self.pos = 0
        self.depth = 0

    def peek(self, offset: int = 0) -> _Token:
        return self.tokens[min(self.pos + offset, len(self.tokens) - 1)]

    def keyword(self, word: str, offset: int = 0) -> bool:
        token = self.peek(offset)
        return token.kind == "word" and token.text.lower() == word

    def take(self) -> _Token:
        token = self.peek()
        self.pos += 1
        return token

    def fail(self, token: _Token, problem: str) -> SelectorError:
        return SelectorError(self.text, token.column, problem)

    def parse(self) -> Node:
        node = self.or_expr()
        token = self.peek()
        if token.kind != "end":
            raise self.fail(token, f"expected 'and', 'or' or the end, found {_shown(token)}")
        return node

    def or_expr(self) -> Node:
        node = self.and_expr()
        while self.keyword("or"):
            self.take()
            node = Either(node, self.and_expr())
        return node

    def and_expr(self) -> Node:
        node = self.not_expr()
        while self.keyword("and"):
            self.take()
            node = Both(node, self.not_expr())
        return node

    def not_expr(self) -> Node:
        token = self.peek()
        if self.depth >= MAX_DEPTH:
            raise self.fail(token, f"nested more than {MAX_DEPTH} levels deep")
        self.depth += 1
        try:
            if self.keyword("not"):
                self.take()
                return Not(self.not_expr())
            if token.kind == "(":
                self.take()
                node = self.or_expr()
                close = self.take()
                if close.kind != ")":
                    raise self.fail(close, f"expected ')' to close the '(' at column {token.column}, "
                                           f"found {_shown(close)}")
                return node
            return self.match()
        finally:
            self.depth -= 1

    def value(self, what: str) -> str:
        token = self.take()
        if token.kind == "string" or (token.kind == "word" and token.text.lower() not in _KEYWORDS):
            return token.text
        raise self.fail(token, f"expected {what}, found {_shown(token)}")

    def tag_value(self, name: str, token: _Token, text: str | None = None) -> str:
        """A value compared with ``tags`` keeps the tag rule (``tether.protocol.tags``)."""
        value = token.text if text is None else text
        if name == "tags":
            problem = tag_problem(value)
            if problem is not None:
                raise self.fail(token, problem)
        return value

    def field(self, token: _Token) -> str:
        name = token.text
        if token.kind != "word" or name not in FIELDS:
            known = ", ".join(FIELDS)
            raise self.fail(token, f"unknown field {name!r}; a selector can test: {known}"
                            if token.kind in ("word", "string") else f"expected a field ({known}), found {_shown(token)}")
        return name

    def match(self) -> Node:
        first = self.peek()
        if first.kind not in ("word", "string") or (first.kind == "word" and first.text.lower() in _KEYWORDS):
            raise self.fail(first, f"expected a test such as plat == windows, found {_shown(first)}")
        # value [not] in FIELD
        negate = self.keyword("not", 1) and self.keyword("in", 2)
        if negate or self.keyword("in", 1):
            value = self.take()
            self.pos += 2 if negate else 1
            name = self.field(self.take())
            return Match(name, "contains", self.tag_value(name, value), negate)
        name = self.field(self.take())
        op = self.take()
        if op.kind == "op":
            at = self.peek()
            value_text = self.value("a value after " + op.text)
            return Match(name, "eq" if op.text == "==" else "ne", self.tag_value(name, at, value_text))
        word = op.text.lower() if op.kind == "word" else ""
        if word == "is":
            negate = self.keyword("not")
            if negate:
                self.take()
            empty = self.take()
            if not (empty.kind == "word" and empty.text.lower() == "empty"):
                raise self.fail(empty, f"expected 'empty', found {_shown(empty)}")
            return Match(name, "empty", negate=negate)
        negate = word == "not"
        if negate:
            op = self.take()
            word = op.text.lower() if op.kind == "word" else ""
        if word == "contains":
            at = self.peek()
            return Match(name, "contains", self.tag_value(name, at, self.value("a value after contains")), negate)
        if word == "matches":
            at = self.peek()
            pattern = self.value("a regular expression after matches")
            try:
                compiled = re.compile(pattern)
            except re.error as exc:
                raise self.fail(at, f"bad regular expression {pattern!r}: {exc}") from None
            problem = regex_problem(pattern)
            if problem is not None:
                raise self.fail(at, f"regular expression {pattern!r} {problem}")
            return Match(name, "matches", pattern, negate, compiled)
        raise self.fail(op, f"expected ==, !=, matches, contains or is after {name!r}, found {_shown(op)}")


_REPEATS = frozenset({_c.MAX_REPEAT, _c.MIN_REPEAT, _c.POSSESSIVE_REPEAT})
_NOT_IN_RE2 = {_c.GROUPREF: "uses a backreference", _c.GROUPREF_EXISTS: "uses a conditional group",
               _c.ASSERT: "uses a lookaround", _c.ASSERT_NOT: "uses a lookaround"}


def regex_problem(pattern: str) -> str | None:
    """Why ``pattern`` could make Python's backtracking engine take exponential time on
    an agent's fact (the daemon evaluates it for every agent that connects), or None.

    go-bexpr's ``matches`` is Go's RE2, which runs in linear time and has no
    backreferences or lookarounds; Python's ``re`` backtracks. So what RE2 lacks is refused,
    and so is a repetition of something that itself repeats or branches (``(a+)+``,
    ``(a|aa)*``), the shape of every catastrophic pattern: ``^web-[0-9]+$`` and
    ``prod|staging`` are fine."""
    return _tree_problem(_parser.parse(pattern), inside_repeat=False)


def _tree_problem(items: Any, *, inside_repeat: bool) -> str | None:
    for op, arg in items:
        if op in _NOT_IN_RE2:
            return _NOT_IN_RE2[op]
        if op in _REPEATS:
            _low, high, sub = arg
            if high > 1 and inside_repeat:
                return "repeats a repetition (e.g. (a+)+), which can take exponential time; write it without nesting"
            problem = _tree_problem(sub, inside_repeat=inside_repeat or high > 1)
        elif op is _c.BRANCH:
            if inside_repeat:
                return "repeats an alternation (e.g. (a|aa)*), which can take exponential time"
            problem = next((p for branch in arg[1] if (p := _tree_problem(branch, inside_repeat=False))), None)
        elif op is _c.SUBPATTERN:
            problem = _tree_problem(arg[-1], inside_repeat=inside_repeat)
        elif op is _c.ATOMIC_GROUP:
            problem = _tree_problem(arg, inside_repeat=inside_repeat)
        else:
            problem = None
        if problem is not None:
            return problem
    return None


_KEYWORDS = frozenset({"and", "or", "not", "in", "is", "matches", "contains", "empty"})


def _shown(token: _Token) -> str:
    if token.kind == "end":
        return "the end"
    return repr(token.text) if token.kind != "string" else f"the string {token.text!r}"


def parse(text: str) -> Node:
    """The syntax tree of a selector; raise :class:`SelectorError` (a ProtocolError,
    INVALID_PARAMS) naming the column."""
    if len(text) > MAX_SELECTOR:
        raise SelectorError(text[:40] + "...", MAX_SELECTOR + 1,
                            f"a selector is at most {MAX_SELECTOR} characters, not {len(text)}")
    if not text.strip():
        raise SelectorError(text, 1, "the selector is empty")
    return _Parser(text).parse()


def evaluate(node: Node, facts: Facts) -> bool:
    """Whether an agent with ``facts`` is selected."""
    if isinstance(node, Either):
        return evaluate(node.left, facts) or evaluate(node.right, facts)
    if isinstance(node, Both):
        return evaluate(node.left, facts) and evaluate(node.right, facts)
    if isinstance(node, Not):
        return not evaluate(node.operand, facts)
    actual = facts.value(node.field)
    result: bool
    if node.op == "empty":
        result = not actual
    elif node.op == "contains":
        result = node.value in actual
    elif isinstance(actual, frozenset):  # == / != / matches on tags: any tag
        result = any(_scalar(node, tag) for tag in actual) if node.op != "ne" else node.value not in actual
    else:
        result = _scalar(node, actual)
    return result != node.negate


def _scalar(node: Match, actual: str) -> bool:
    if node.op == "matches":
        assert node.pattern is not None
        return node.pattern.search(actual) is not None
    if node.op == "eq":
        return actual == node.value
    return actual != node.value


def compile_selector(text: str) -> Callable[[Facts], bool]:
    """Parse once, evaluate many times (an agent connecting, a tag added)."""
    node = parse(text)
    return lambda facts: evaluate(node, facts)
