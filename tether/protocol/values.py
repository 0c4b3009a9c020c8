"""What a value in a console request may be: JSON, as the daemon can keep and send it on.

Params are decoded from JSON or MessagePack; MessagePack carries more than JSON does
(binary, extension types, non-text map keys, NaN and infinities, 64-bit unsigned ints)
and both carry nesting deep enough to overflow the encoders' recursion. A value is kept
in SQLite and MessagePack (64-bit ints) and sent to JSON peers (tetherctl, JSON agents),
so anything beyond that is refused at the edge, with where it is, instead of failing
later at the store or when a JSON console reads the task back.
"""

from __future__ import annotations

import math
from typing import Any

import msgspec

MAX_DEPTH = 64
"""Lists and objects nested deeper than this are refused: enough for any command's args,
and far below the recursion limit of the encoders that write the value again later."""

INT_MIN = -(2**63)
INT_MAX = 2**63 - 1
"""SQLite's INTEGER, which every id and count is stored as."""


def _text_problem(text: str) -> str | None:
    try:
        text.encode()
    except UnicodeEncodeError:
        return "text that is not valid Unicode (a lone surrogate)"
    return None


def _scalar_problem(value: Any) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return None if INT_MIN <= value <= INT_MAX else "an integer beyond 64 bits"
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{value}, which JSON has no number for"
    if isinstance(value, str):
        return _text_problem(value)
    return f"a {type(value).__name__}, which is not a JSON value"


def _where(path: list[str | int]) -> str:
    out = "$"
    for step in path:
        out += f"[{step}]" if isinstance(step, int) else f".{step[:40]}"
    return out


def value_problem(value: Any) -> str | None:
    """Why ``value`` is not a JSON value tether can keep (``"an integer beyond 64 bits at
    `$.args.n`"``), or None if it is one. Iterative: any depth is looked at safely."""
    if not isinstance(value, dict | list):
        problem = _scalar_problem(value)
        return None if problem is None else f"{problem} at `$`"
    stack: list[tuple[dict[Any, Any] | list[Any], list[str | int]]] = [(value, [])]
    while stack:
        container, path = stack.pop()
        if len(path) >= MAX_DEPTH:
            return f"lists and objects nested more than {MAX_DEPTH} deep at `{_where(path)}`"
        items = container.items() if isinstance(container, dict) else enumerate(container)
        for key, item in items:
            if isinstance(container, dict):
                if not isinstance(key, str):
                    return f"an object key that is not text ({type(key).__name__}) at `{_where(path)}`"
                if (problem := _text_problem(key)) is not None:
                    return f"an object key that is {problem} at `{_where(path)}`"
            if isinstance(item, dict | list):
                stack.append((item, [*path, key]))
            elif (problem := _scalar_problem(item)) is not None:
                return f"{problem} at `{_where([*path, key])}`"
    return None


_json = msgspec.json.Encoder()


def _nests_deeper_than(value: Any, limit: int) -> bool:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        container, depth = stack.pop()
        if depth > limit:
            return True
        for item in container.values() if isinstance(container, dict) else container:
            if isinstance(item, dict | list):
                stack.append((item, depth + 1))
    return False


def output_problem(blob: bytes) -> str | None:
    """Why an agent's result output (MessagePack) cannot be kept, or None if it can.

    Outputs are shown to JSON consoles (``tetherctl show``), inside the task's answer: one
    nested past what a decoder can read back, or holding what JSON has no text for (an
    extension type, a map key that is not text or a number), would make every answer about
    its task fail. What JSON writes in another form (binary as base64, NaN as null) is kept.
    """
    try:
        value = msgspec.msgpack.decode(blob)
    except msgspec.DecodeError:
        return "it is not valid MessagePack"
    except RecursionError:
        return f"lists and objects nested more than {MAX_DEPTH} deep"
    if isinstance(value, dict | list) and _nests_deeper_than(value, MAX_DEPTH):
        return f"lists and objects nested more than {MAX_DEPTH} deep"
    try:
        _json.encode(value)
    except TypeError as exc:
        return f"JSON cannot hold it: {exc}"
    return None
