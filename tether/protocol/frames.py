"""Every frame of the tether protocol, as tagged msgspec Structs.

A frame is one WebSocket message. Agents send binary frames (MessagePack); consoles
(tetherctl) send text frames (JSON). Both carry the same Structs, tagged by the field
``t``. The daemon answers in the encoding the peer used for its first frame.

Schema evolution (msgspec "Schema evolution"): new fields always get defaults, unknown
fields are ignored, and a tag is never reused for another frame.

Session flow::

    agent    -> hello(role=agent, agent_id, token, holding)   console -> hello(role=console, token)
    daemon   -> welcome | error + close(4xxx)
    daemon   -> task ...           agent -> ack([ids]) -> progress -> result
    daemon   -> committed([ids])   (the agent may now forget those results)
    daemon   -> cancel             (untask or ttl expiry of a delivery the agent holds)
    daemon   -> drained            (feature ``drained``: everything queued for the agent is pushed)
    agent    -> state              (its facts and configuration: on open, then every state_interval)
    daemon   -> configure          (its desired configuration, when the reported one differs)
    console  -> req(id, method, params)   daemon -> res(id) | error(ref=id) | event(id) ...

Enrollment is its own short session: ``enroll`` -> ``enrolled`` | ``error``, then close.

Runs: a delivery normally runs once (run 1). A polling command (Cortex XSOAR "Scheduled
Commands") ends a run with a ``result`` carrying a ``schedule``; the daemon holds the wait
on its timer wheel and pushes the same delivery again as run 2, 3 ... Every frame about
one run of a delivery names the run (``run``, or ``runs`` beside a list of delivery ids,
empty when every one is run 1), so the agent's journal deduplicates by (delivery, run)
and the daemon can tell a late report about an earlier run from one about the current.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from .agent_config import MAX_KEYS
from .agent_state import AgentState
from .alerts import AlertBody
from .lifecycle import UNTASKED, CancelReason

PROTOCOL_VERSION = 1
"""Sent in ``hello``/``enroll``; the daemon refuses other versions with 4002."""

NIL = msgspec.Raw(b"\xc0")
"""MessagePack ``nil`` as a pre-encoded value, the default for raw payload fields."""

# -- bounds (issue 15, finding 2) ----------------------------------------------------------
# Every list a peer sends is bounded in its type, so the decoders refuse a longer one from
# its MessagePack header, before building a single element (a JSON list is parsed first,
# ~30 ms for a whole MiB of it, but nothing of it is acted on). What one message may make
# a receiver do is bounded too: :func:`message_weight`, at most :data:`MAX_MESSAGE_WEIGHT`.

MAX_BATCH_FRAMES = 1024
"""Frames in one ``batch``: agents send at most 64, tetherd at most its window's worth."""
MAX_IDS = 4096
"""Delivery ids (and runs) in one ``ack`` or ``committed``; tetherd's ``window`` is at most this."""


DEFAULT_WINDOW = 32
"""tetherd's ``window`` unless configured: deliveries pushed and not yet acknowledged per
session (enough for a fast agent never to wait on an ack round trip; docs/performance.md)."""
MAX_HOLDING = 65_536
"""Delivery ids in a ``hello``'s ``holding``; an agent holding more names the first ones."""
MAX_NAMES = 1024
"""Strings in a list of names: a hello's commands and features, an enrollment's tags (tighter
rules, e.g. 64 tags per agent, are checked after decoding, with their own messages); also
the sequels of one result."""
MAX_MESSAGE_WEIGHT = 65_536
"""Most frames plus delivery ids one WebSocket message may carry (:func:`message_weight`):
an agent's batch is at most 64 KiB, so it never names more."""

Ids = Annotated[list[int], msgspec.Meta(max_length=MAX_IDS)]
Held = Annotated[list[int], msgspec.Meta(max_length=MAX_HOLDING)]
Names = Annotated[list[str], msgspec.Meta(max_length=MAX_NAMES)]


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
    commands: Names = []
    """Commands this agent serves; tasks for others are refused at creation (1303)."""
    holding: Held = []
    """Delivery ids the agent holds (journaled, running, or results not yet committed);
    the daemon does not push these again."""
    holding_runs: Held = []
    """The run of each id in ``holding``, in the same order; empty when every one is run 1."""
    features: Names = []
    """Optional parts of the protocol this peer speaks (see :data:`FEATURES`)."""

    def __post_init__(self) -> None:
        _check_runs(self.holding, self.holding_runs, "holding_runs")


class Enroll(Frame, tag="enroll"):
    """First and only frame of an enrollment session (Armadito "Enrollment").

    An enrollment never takes over an enrolled agent's identity without proof: only an
    enrollee presenting an agent's id and current token re-enrolls as that agent (same
    id and token, tags unchanged). Without proof it is a new agent, marked a possible
    clone when another agent was enrolled from the same machine UUID."""

    version: int
    key: str
    hostname: str = ""
    platform: str = ""
    machine_uuid: str = ""
    """The endpoint's identity (per state directory); a known one without proof marks a
    possible clone (``tetherctl agents``), it never gives the old agent's id."""
    tags: Names = []
    """Tags asked for: granted if the key gives them or allows requested tags."""
    agent_id: str | None = None
    """Re-enrolling: the id of the agent this enrollee says it is, proved by ``token``."""
    token: str = ""
    """Re-enrolling: that agent's current token."""


class Enrolled(Frame, tag="enrolled"):
    """Enrollment accepted: the agent stores its id and token, then opens sessions with them."""

    agent_id: str
    token: str
    """Secret; shown once, stored hashed by the daemon."""
    tags: list[str] = []
    status: Literal["new", "existing"] = "new"
    """``existing``: a proved re-enrollment of this agent (its journal stays valid)."""
    clone_of: str = ""
    """A new agent enrolled from the machine UUID of this enrolled one (a possible clone)."""
    replaces: str = ""
    """A new agent that proved it was this one from another machine UUID (re-imaged or
    cloned): that agent is kept as ``replaced`` by this one, its token void."""


class Welcome(Frame, tag="welcome"):
    """Hello accepted: the session is open."""

    version: int
    role: Literal["agent", "console"]
    session_id: str
    server_time: float
    agent_id: str | None = None
    """The agent's id; another than the hello's when an admin merged that agent into this
    one (``tetherctl agent merge``): the agent keeps this id from then on."""
    window: int = DEFAULT_WINDOW
    """How many deliveries the daemon keeps unacknowledged in flight to this agent."""
    features: list[str] = []
    """Of the features the hello announced, those the daemon speaks too: both sides may use them."""


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
    """Which run of the delivery this is: 1, then 2, 3 ... for a polling command's next runs."""
    poll_deadline: float = 0.0
    """For a later run of a polling sequence: when the sequence times out."""
    poll_timeout: float = 0.0
    """... and its timeout (so it started at ``poll_deadline - poll_timeout``)."""


class Cancel(Frame, tag="cancel"):
    """Do not run this delivery, or stop it if it runs (untask, or its ttl ended before it was
    acknowledged, or its polling sequence timed out). It applies to every run of the delivery."""

    delivery_id: int
    reason: CancelReason = UNTASKED


class Committed(Frame, tag="committed"):
    """These results are committed to the daemon's store; the agent may drop them."""

    delivery_ids: Ids
    runs: Ids = []
    """The run of each delivery id, in the same order; empty when every one is run 1."""

    def __post_init__(self) -> None:
        _check_runs(self.delivery_ids, self.runs, "runs")


class Drained(Frame, tag="drained"):
    """Every delivery queued for this agent when it was sent has been pushed (read through
    to the end of its queue): what ``tether-agent once`` waits for before it may leave. Only
    to a session that announced the ``drained`` feature; sent again each time the queue
    runs empty after more was pushed. Deliveries not yet due (``--delay``) or waiting for a
    polling command's next run are not queued: they come on a later session."""


# -- agent -> daemon ---------------------------------------------------------------------


class Ack(Frame, tag="ack"):
    """The agent has journaled these deliveries; they will run even if it restarts."""

    delivery_ids: Ids
    runs: Ids = []
    """The run of each delivery id, in the same order; empty when every one is run 1."""

    def __post_init__(self) -> None:
        _check_runs(self.delivery_ids, self.runs, "runs")


MAX_PROGRESS_MESSAGE = 1024
"""Characters of a progress message (the SDK cuts a longer one): tetherd keeps the last one
of each run, so what a progress report costs it is bounded whatever a peer sends."""


class Progress(Frame, tag="progress"):
    """The command started (first progress) or reports how far it got."""

    delivery_id: int
    percent: Annotated[float, msgspec.Meta(ge=0, le=100)] | None = None
    message: Annotated[str, msgspec.Meta(max_length=MAX_PROGRESS_MESSAGE)] = ""
    run: int = 1


def progress_text(percent: float | None, message: str) -> str:
    """How a progress report is kept and shown: ``"45% 4500/10000 files /etc/x"``."""
    return (message if percent is None else f"{percent:.0f}% {message}").strip()


def progress_parts(text: str) -> tuple[float | None, str]:
    """The percent and the message of a :func:`progress_text` (a console's progress bar)."""
    head, _, rest = text.partition("% ")
    if head.isdigit() and len(head) <= 3:
        return float(head), rest
    if text.endswith("%") and text[:-1].isdigit() and len(text) <= 4:
        return float(text[:-1]), ""
    return None, text


class Alert(Frame, tag="alert"):
    """An alert the agent raises (:mod:`.alerts`): kept in its journal, and sent again on
    every session, until an ``alerted`` names it."""

    id: int
    """The agent's own number for it, named back in ``alerted``."""
    alert: AlertBody
    raised_at: float = 0.0
    """When it was raised, by the agent's clock."""
    delivery_id: int | None = None
    """The delivery whose command raised it (``ctx.alert``), if one did."""


class Alerted(Frame, tag="alerted"):
    """tetherd took these alerts (stored, or counted beyond the agent's rate limit): the
    agent may forget them. An alert it refuses for good is answered with an ``error``
    (``invalid_alert``) naming it in ``ref`` instead."""

    ids: Ids


class StateReport(Frame, tag="state"):
    """The agent's facts (:mod:`.agent_state`): sent when its session opens and every
    ``state_interval``, only to a daemon that granted the ``state`` feature. tetherd keeps the
    latest and a history of the tracked facts that changed; it stores a few reports per agent
    a minute at most and counts the rest (``tether_state_reports_dropped_total``)."""

    state: AgentState
    config: Annotated[dict[str, Any], msgspec.Meta(max_length=MAX_KEYS)] = {}
    """The configuration the agent runs with: what differs from the defaults
    (:mod:`.agent_config`). tetherd checks it, stores it by its hash, and compares it with
    the agent's desired configuration."""
    config_error: Annotated[str, msgspec.Meta(max_length=1024)] = ""
    """Why the agent did not apply the last configuration pushed to it (its ``on_config``
    handler refused it); empty when it did."""


class Configure(Frame, tag="configure"):
    """The configuration the agent must run with (what differs from the defaults), pushed
    when its session opens with another one, or when an operator changes it. The agent
    applies it and reports its state, with the configuration it now runs, at once."""

    settings: dict[str, Any]
    hash: str
    """The configuration's SHA-256 (:func:`~.agent_config.config_hash`)."""


class Schedule(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A run's request to be run again (Cortex XSOAR ``ScheduledCommand``), inside a ``result``.

    Not a frame of its own. The daemon checks it (never sooner than its floor, 10 s by
    default; negative or absurd values end the sequence as failed, with the reason) and
    holds the wait on its timer wheel; nothing waits on the agent.
    """

    command: str
    """The command of the next run (usually the same one)."""
    next_run_in_seconds: float
    args: dict[str, Any] = {}
    """The args of the next run."""
    timeout_in_seconds: float | None = None
    """How long the whole sequence may poll, counted from its first schedule (default 600 s);
    then the daemon ends it with the error ``polling timed out after N s``."""
    poll_message: str = ""
    """Shown in the run's history entry (XSOAR: "Fetching Results:")."""
    items_remaining: int = 0
    """XSOAR ``ScheduledCommand(items_remaining=...)``: shown in the run's history entry."""


class Sequel(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Another polling sequence started by the same run, inside a ``result`` (a list of
    results of which several carry a schedule, as XSOAR's Gmail integration returns)."""

    schedule: Schedule
    output: msgspec.Raw
    """Its partial result (``nil`` for none): the first entry of its history."""


class Result(Frame, tag="result"):
    """How a run of a delivery ended; kept in the agent's outbox until ``committed``.

    With ``schedule`` the run asks to be run again: ``output`` is then its partial result."""

    delivery_id: int
    ok: bool
    output: msgspec.Raw = NIL
    """The handler's return value, encoded once by the agent."""
    error: str = ""
    started_at: float = 0.0
    finished_at: float = 0.0
    run: int = 1
    schedule: Schedule | None = None
    sequels: Annotated[list[Sequel], msgspec.Meta(max_length=MAX_NAMES)] = []
    """With ``schedule``: further polling sequences this run starts, each the delivery of a
    task of its own for the same agent, shown with the task."""


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


class Batch(Frame, tag="batch"):
    """Several frames in one WebSocket message, applied in order as if sent one by one: a
    burst of ``task`` frames from the daemon, or of ``ack``, ``progress`` and ``result``
    frames from an agent. Only between peers that both announced the ``batch`` feature
    (hello / welcome); a batch never holds a batch, a hello or an enroll."""

    frames: Annotated[list[msgspec.Raw], msgspec.Meta(max_length=MAX_BATCH_FRAMES)]
    """Each an encoded frame, in the encoding of the message that carries them."""


FEATURES = ("batch", "drained", "state")
"""Optional protocol features this code speaks; a peer uses one only if both announced it.
``drained``: the daemon sends :class:`Drained` when the agent's queue is pushed to its end
(announced by ``tether-agent once`` only: a persistent agent has no use for it); ``state``:
the agent sends ``state`` reports (and takes ``configure``)."""


def _check_runs(delivery_ids: list[int], runs: list[int], name: str) -> None:
    # msgspec turns a ValueError raised here into a validation error of the frame (1102).
    if runs and len(runs) != len(delivery_ids):
        raise ValueError(f"`{name}` must be empty or name the run of every delivery id")


def message_weight(frames: list[Any]) -> int:
    """What acting on one message's frames costs, in frames: each frame counts one, and one
    more per delivery id it names (an ``ack``, a ``committed``, a ``hello``'s holding). Read
    from list lengths only, so it costs a few operations per frame; anything in ``frames``
    that is not a frame (a decoding error in its place) counts one."""
    weight = len(frames)
    for frame in frames:
        kind = type(frame)  # exact types, no isinstance: this runs for every message on the hot path
        if kind is Ack or kind is Committed:
            weight += len(frame.delivery_ids)
        elif kind is Hello:
            weight += len(frame.holding)
    return weight


def chunked(items: list[Any], size: int) -> list[list[Any]]:
    """``items`` in consecutive lists of at most ``size`` (none for no items): a list longer
    than a frame may carry, as several frames' worth."""
    return [items[i:i + size] for i in range(0, len(items), size)]


def run_refs(delivery_ids: list[int], runs: list[int]) -> list[tuple[int, int]]:
    """``(delivery_id, run)`` pairs from a frame's id list and its parallel ``runs``."""
    return list(zip(delivery_ids, runs, strict=True)) if runs else [(d, 1) for d in delivery_ids]


def split_refs(refs: list[tuple[int, int]]) -> tuple[list[int], list[int]]:
    """The id list and ``runs`` of a frame for ``(delivery_id, run)`` pairs; ``runs`` is
    left empty when every run is 1 (the common case, and what older peers send)."""
    ids = [d for d, _ in refs]
    runs = [r for _, r in refs]
    return ids, ([] if all(r == 1 for r in runs) else runs)


ToDaemon = Hello | Enroll | Ack | Progress | Result | Alert | StateReport | Request | Batch
"""Every frame a peer may send to the daemon."""

FromDaemon = Welcome | Enrolled | Error | Task | Cancel | Committed | Alerted | Drained | Configure | Response | Event | Batch
"""Every frame the daemon may send."""

TO_DAEMON: tuple[type[Frame], ...] = (Hello, Enroll, Ack, Progress, Result, Alert, StateReport, Request, Batch)
FROM_DAEMON: tuple[type[Frame], ...] = (
    Welcome, Enrolled, Error, Task, Cancel, Committed, Alerted, Drained, Configure, Response, Event, Batch,
)
