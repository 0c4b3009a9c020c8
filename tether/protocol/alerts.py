"""Alerts (Armadito's, deduplicated by a server-side checksum): what one is, its bounds,
and the checksum that makes two copies one.

An alert is what an agent raises about its endpoint (a scan's match, a script's finding):
``kind`` and ``name`` say what it is, ``path`` and ``hash`` where, ``severity``, ``message``
and ``details`` the rest. tetherd keeps each distinct alert once, with how often it came,
when first and last, and its latest full copy; two alerts are the same when the fields
named in tetherd's ``alert_checksum`` setting are (default :data:`DEFAULT_CHECKSUM`).

Every bound is in the types, so the decoders refuse an oversized alert before anything is
stored, with msgspec's message naming the field; :func:`alert_problem` checks what a type
cannot (``details`` as plain JSON of at most :data:`MAX_DETAILS_BYTES`). The agent checks
the same before it journals one, so an alert it keeps is one tetherd takes.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any, Final, Literal

import msgspec

from .console import Params, View
from .values import value_problem

MAX_KIND = 64
MAX_NAME = 256
MAX_PATH = 4096
MAX_HASH = 128
MAX_MESSAGE = 4096
MAX_DETAILS_BYTES = 16 * 1024
"""Most bytes of an alert's ``details`` (as MessagePack): an alert is a finding, not a file."""

Severity = Literal["info", "low", "medium", "high", "critical"]
SEVERITIES: Final = ("info", "low", "medium", "high", "critical")


class AlertBody(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One alert as its raiser gives it (``ctx.alert(...)``, ``tether-agent alert --json``)."""

    kind: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_KIND)]
    """What raised it: ``scan``, ``integrity``, ``script`` ..."""
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_NAME)]
    """What it is: a detection's name, a rule's."""
    path: Annotated[str, msgspec.Meta(max_length=MAX_PATH)] = ""
    hash: Annotated[str, msgspec.Meta(max_length=MAX_HASH)] = ""
    severity: Severity = "medium"
    message: Annotated[str, msgspec.Meta(max_length=MAX_MESSAGE)] = ""
    details: dict[str, Any] = {}
    """Anything else, as a JSON object (at most :data:`MAX_DETAILS_BYTES`)."""


FIELDS: Final = ("agent", "kind", "name", "path", "hash", "severity", "message")
"""The fields a checksum may be over."""

DEFAULT_CHECKSUM: Final = ("agent", "kind", "name", "path", "hash")
"""The fields two alerts must share to be one (Armadito's checksum over the alert)."""


def alert_problem(body: AlertBody) -> str | None:
    """What makes a decoded alert one tetherd refuses, or None (the types bound the rest)."""
    if not body.details:
        return None
    problem = value_problem(body.details)
    if problem is not None:
        return f"details hold {problem}"
    size = len(msgspec.msgpack.encode(body.details))
    if size > MAX_DETAILS_BYTES:
        return f"details take {size} bytes; at most {MAX_DETAILS_BYTES}"
    return None


def parse_alert(value: Any) -> AlertBody:
    """An alert from a JSON object (a script's ``--json``, ``ctx.alert``'s keywords); raise
    ``ValueError`` saying what is wrong (a missing field, an unknown one, a bound)."""
    if isinstance(value, dict):
        unknown = sorted(str(k) for k in value if k not in AlertBody.__struct_fields__)
        if unknown:
            raise ValueError(f"invalid alert: unknown field {unknown[0]!r} (fields: "
                             f"{', '.join(AlertBody.__struct_fields__)})")
    try:
        body = msgspec.convert(value, AlertBody, strict=True)
    except msgspec.ValidationError as exc:
        raise ValueError(f"invalid alert: {exc}") from None
    problem = alert_problem(body)
    if problem is not None:
        raise ValueError(f"invalid alert: {problem}")
    return body


def check_checksum_fields(fields: list[str]) -> tuple[str, ...]:
    """``alert_checksum`` as given, checked: known fields, at least ``kind`` or ``name``."""
    unknown = [f for f in fields if f not in FIELDS]
    if unknown:
        raise ValueError(f"unknown alert field {unknown[0]!r} in alert_checksum (fields: {', '.join(FIELDS)})")
    if not ({"kind", "name"} & set(fields)):
        raise ValueError("alert_checksum must include kind or name (else every alert is one)")
    return tuple(dict.fromkeys(fields))


def checksum(agent_id: str, body: AlertBody, fields: tuple[str, ...] = DEFAULT_CHECKSUM) -> bytes:
    """The SHA-256 over ``fields`` of the alert (``agent``: the agent that sent it), each
    named, so that no two different alerts share one by where their values split."""
    values = [[f, agent_id if f == "agent" else getattr(body, f)] for f in fields]
    return hashlib.sha256(msgspec.msgpack.encode(values)).digest()


# -- the console's view of alerts (tetherctl alerts) -----------------------------------------


class AlertsList(Params):
    """``alerts.list``: the distinct alerts, the most recently seen first."""

    agent: str | None = None
    kind: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_KIND)] | None = None
    within: Annotated[float, msgspec.Meta(gt=0)] | None = None
    """Only those seen in the last ``within`` seconds (``tetherctl alerts --since 1h``)."""
    limit: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 100


class AlertId(Params):
    alert_id: Annotated[int, msgspec.Meta(ge=1)]


class AlertView(View):
    """One distinct alert: its fields, how often and when it came, and its latest copy."""

    alert_id: int
    agent_id: str
    """The agent that sent its latest copy (every copy's, when ``agent`` is a checksum field)."""
    kind: str
    name: str
    path: str
    hash: str
    severity: str
    message: str
    count: int
    """Copies received (stored ones: those over an agent's rate limit are counted apart)."""
    first_seen: float
    last_seen: float
    acked_at: float | None = None
    acked_count: int = 0
    """``count`` when it was acknowledged: copies since then are ``count - acked_count``."""
    details: dict[str, Any] = {}
    """The latest copy's details."""
    raised_at: float = 0.0
    """When the agent says the latest copy was raised (its clock)."""
    delivery_id: int | None = None
    """The delivery whose command raised the latest copy, if a command did."""


class AlertDrops(View):
    """Alerts an agent sent beyond its rate limit: counted, not stored."""

    agent_id: str
    dropped: int
    last_at: float


class AlertList(View):
    alerts: list[AlertView]
    dropped: list[AlertDrops] = []
    """Agents whose alerts went over their rate limit, and how many were not stored."""
