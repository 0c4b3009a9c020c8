"""The one rule for tags, wherever a tag comes from or is used.

A tag is 1-64 characters of ``A-Z a-z 0-9 . _ : -`` starting with a letter or a digit,
and an agent carries at most 64 of them. The same rule holds for the tags an agent asks
for at enrollment, ``tag.add``, an enrollment key's tags and every target or filter that
names a tag (task, schedule, untask, listings, selectors). Why: a tag is joined into SQL
parameter lists, log lines and tables; a bounded charset with no comma, space or control
character keeps each of them unambiguous (a table joins tags with :data:`SEPARATOR`) and
bounded (an unbounded list once failed whole group commits on SQLite's variable limit).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from .errors import ErrorCode, ProtocolError

MAX_TAG_LENGTH = 64
MAX_TAGS_PER_AGENT = 64
RULE = (f"a tag is 1-{MAX_TAG_LENGTH} characters of letters, digits and . _ : -, "
        "starting with a letter or a digit")
"""Said in every refusal, so the message names the rule as well as the tag."""
SEPARATOR = ","
"""No tag contains it: tables may join an agent's tags with it unambiguously."""

_TAG = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._:-]{{0,{MAX_TAG_LENGTH - 1}}}")


def tag_problem(tag: object) -> str | None:
    """Why ``tag`` breaks the rule (a message naming it and the rule), or None if it is a tag."""
    if isinstance(tag, str) and _TAG.fullmatch(tag):
        return None
    shown = tag if not isinstance(tag, str) or len(tag) <= 2 * MAX_TAG_LENGTH else tag[: 2 * MAX_TAG_LENGTH] + "..."
    return f"invalid tag {shown!r}: {RULE}"


def is_tag(tag: object) -> bool:
    return tag_problem(tag) is None


def check_tag(tag: str, code: ErrorCode = ErrorCode.INVALID_PARAMS) -> str:
    """``tag`` itself if it keeps the rule; else raise :class:`ProtocolError` with ``code``."""
    problem = tag_problem(tag)
    if problem is not None:
        raise ProtocolError(code, problem)
    return tag


def check_tags(tags: Iterable[str], code: ErrorCode = ErrorCode.INVALID_PARAMS) -> list[str]:
    """The distinct tags, sorted, if each keeps the rule and there are at most
    :data:`MAX_TAGS_PER_AGENT`; else raise :class:`ProtocolError` with ``code``."""
    distinct = sorted({check_tag(t, code) for t in tags})
    check_tag_count(len(distinct), code)
    return distinct


def check_tag_count(count: int, code: ErrorCode = ErrorCode.INVALID_PARAMS, *, whose: str = "") -> None:
    """Raise :class:`ProtocolError` if ``count`` tags are more than an agent may carry."""
    if count > MAX_TAGS_PER_AGENT:
        who = f"{whose} would carry" if whose else "that is"
        raise ProtocolError(code, f"{who} {count} tags; an agent carries at most {MAX_TAGS_PER_AGENT}")
