"""Every frame of the tether protocol, as tagged msgspec Structs.

A frame is one WebSocket message. Agents send binary frames (MessagePack); consoles and
the web page send text frames (JSON). Both carry the same Structs, tagged by the field
``t``. The daemon answers in the encoding the peer used for its first frame.

Schema evolution (msgspec "Schema evolution"): new fields always get defaults, unknown
fields are ignored, and a tag is never reused for another frame.

Session flow::

    agent    -> hello(role=agent, agent_id, token, holding)   console -> hello(role=console, token)
    daemon   -> welcome | error + close(4xxx)
    daemon   -> task ...           agent -> ack([ids]) -> progress -> result
    daemon   -> committed([ids])   (the agent may now forget those results)
    daemon   -> cancel             (untask or ttl expiry of a delivery the agent holds)
    console  -> req(id, method, params)   daemon -> res(id) | error(ref=id) | event(id) ...

Enrollment is its own short session: ``enroll`` -> ``enrolled`` | ``error``, then close.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

PROTOCOL_VERSION = 1
"""Sent in ``hello``/``enroll``; the daemon refuses other versions with 4002."""

NIL = msgspec.Raw(b"\xc0")
"""MessagePack ``nil`` as a pre-encoded value, the default for raw payload fields."""


class Frame(msgspec.Struct, tag_field="t", kw_only=True, omit_defaults=True):
    """Base of every frame; never sent itself."""


# -- handshake ---------------------------------------------------------------------------


class Hello(Frame, tag="hello"):
    """First frame of every session but enrollment."""

    role: Literal["agent", "console"]
    version: int
    token: str = ""
    """An admin token (console) or the agent's secret token; missing means refused (4010)."""
    agent_id: str | None = None
    """Agents only: the id received at enrollment."""
    hostname: str = ""
    platform: str = ""
    machine_uuid: str = ""
    agent_version: str = ""
    commands: list[str] = []
    """Commands this agent serves; tasks for others are refused at creation (1303)."""
    holding: list[int] = []
    """Delivery ids the agent holds (journaled, running, or results not yet committed);
    the daemon does not push these again."""


class Enroll(Frame, tag="enroll"):
    """First and only frame of an enrollment session (Armadito "Enrollment")."""

    version: int
    key: str
    hostname: str = ""
    platform: str = ""
    machine_uuid: str = ""
    """An agent presenting a known machine UUID gets its old id back (with a new token)."""
    tags: list[str] = []


class Enrolled(Frame, tag="enrolled"):
    """Enrollment accepted: the agent stores its id and token, then opens sessions with them."""

    agent_id: str
    token: str
    """Secret; shown once, stored hashed by the daemon."""
    tags: list[str] = []


class Welcome(Frame, tag="welcome"):
    """Hello accepted: the session is open."""

    version: int
    role: Literal["agent", "console"]
    session_id: str
    server_time: float
    agent_id: str | None = None
    window: int = 10
    """How many deliveries the daemon keeps unacknowledged in flight to this agent."""


class Error(Frame, tag="error"):
    """An error from the registry (``tether.protocol.errors``); 4xxx codes are followed by a close."""

    code: int
    name: str
    message: str
    ref: int | None = None
    """The request id (console) or delivery id (agent) the error is about."""
    retry_after: float | None = None


# -- daemon -> agent ---------------------------------------------------------------------


class Task(Frame, tag="task"):
    """One delivery of a task to this agent. May arrive more than once (at-least-once):
    the agent's journal deduplicates by ``delivery_id``."""

    delivery_id: int
    task_id: int
    command: str
    args: msgspec.Raw = msgspec.Raw(b"\x80")
    """The task's args, a JSON object, passed through undecoded by the daemon."""
    priority: int = 1
    expires_at: float = 0.0
    run: int = 1


class Cancel(Frame, tag="cancel"):
    """Do not run this delivery, or stop it if it runs (untask, or its ttl ended before it was acknowledged)."""

    delivery_id: int
    reason: Literal["cancelled", "expired"] = "cancelled"


class Committed(Frame, tag="committed"):
    """These results are committed to the daemon's store; the agent may drop them."""

    delivery_ids: list[int]


# -- agent -> daemon ---------------------------------------------------------------------


class Ack(Frame, tag="ack"):
    """The agent has journaled these deliveries; they will run even if it restarts."""

    delivery_ids: list[int]


class Progress(Frame, tag="progress"):
    """The command started (first progress) or reports how far it got."""

    delivery_id: int
    percent: float | None = None
    message: str = ""


class Result(Frame, tag="result"):
    """How a delivery ended; kept in the agent's outbox until ``committed``."""

    delivery_id: int
    ok: bool
    output: msgspec.Raw = NIL
    """The handler's return value, encoded once by the agent."""
    error: str = ""
    started_at: float = 0.0
    finished_at: float = 0.0


# -- console <-> daemon ------------------------------------------------------------------


class Request(Frame, tag="req"):
    """A console RPC call; ``id`` is chosen by the console and echoed in the answer."""

    id: int
    method: str
    params: dict[str, Any] = {}


class Response(Frame, tag="res"):
    """The answer to request ``id``, sent after whatever it changed is committed."""

    id: int
    result: Any = None


class Event(Frame, tag="event"):
    """A notification belonging to the long-running request ``id`` (e.g. ``task.wait``)."""

    id: int
    topic: str
    data: Any = None


ToDaemon = Hello | Enroll | Ack | Progress | Result | Request
"""Every frame a peer may send to the daemon."""

FromDaemon = Welcome | Enrolled | Error | Task | Cancel | Committed | Response | Event
"""Every frame the daemon may send."""

TO_DAEMON: tuple[type[Frame], ...] = (Hello, Enroll, Ack, Progress, Result, Request)
FROM_DAEMON: tuple[type[Frame], ...] = (
    Welcome, Enrolled, Error, Task, Cancel, Committed, Response, Event,
)
