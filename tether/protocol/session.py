"""The session rules, sans I/O: who says what first, what an answer means, what may follow.

After websockets' ``protocol.py``: these objects turn WebSocket messages into frames and
decisions, and decisions into frames; they never touch a socket, an event loop or a clock.
The drivers (the agent's :mod:`tether.agent.client`, the console client, tetherd's agent and
console sessions) only move messages between a connection and them, and time them out.

**Opening** (``frames.py``, "Session flow"). A client's first frame is a ``hello`` (role
``agent`` or ``console``) or an ``enroll``; the daemon decides the session from it
(:func:`open_session`): anything else, or another protocol version, ends the connection
with a session error. The daemon's first answer is ``welcome`` to a hello (the session is
open, :func:`welcome`), ``enrolled`` to an enroll (the enrollment is over), or an ``error``
followed by a close whose code is the error's (:func:`refusal`, as every session the daemon
ends over a session error); :class:`ClientSession` turns each into the session's state or a
:class:`~.errors.SessionClosed`, and anything else into a failed opening.

**Messages** (the daemon's :class:`Inbox`). Once open, an agent sends its reports
(:data:`AGENT_REPORTS`), a console one ``req`` a message; anything else is answered with
:func:`unexpected`. A message carries at most :data:`~.frames.MAX_MESSAGE_WEIGHT` frames and
delivery ids together, and a batch's frames are charged to the session's frame budget
before they are decoded.

**Features.** A peer uses an optional part of the protocol (:data:`~.frames.FEATURES`) only
if both announced it: the hello announces, the welcome grants those of them the daemon
speaks too (:func:`granted`).

**Batches.** A ``batch`` carries at most :data:`~.frames.MAX_BATCH_FRAMES` frames, never a
batch, hello or enroll (:func:`~.codec.unbatch`: a frame that breaks that, or that does not
decode, is its own error in its place, and the others are applied in order).
:func:`batches` packs encoded frames into messages under a size a receiver takes; a
``committed`` names at most :data:`~.frames.MAX_IDS` runs (:func:`committed`).

**Window.** The daemon keeps at most the welcome's ``window`` deliveries pushed and not yet
acknowledged; an agent does not journal (nor acknowledge) a push past it
(:class:`AgentWindow`). **Holding**: the hello names the runs the agent holds (journaled,
running, or a result not yet committed), at most :data:`~.frames.MAX_HOLDING`; the daemon
never pushes those again in that session (:func:`holding`). **Committed**: a result stays in the agent's
outbox until a ``committed`` names its run; then the agent may forget it. A result the
daemon refuses for good (:data:`REFUSED_RESULT_CODES`) may be forgotten too.

**Close codes.** Every 4xxx code ends the session; after those in :data:`AGENT_FATAL` an
agent stops instead of reconnecting (the daemon will refuse it the same way again).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from .codec import (
    JSON,
    MSGPACK,
    Codec,
    decode_first,
    decode_from_daemon,
    decode_to_daemon,
    error_frame,
    unbatch,
)
from .errors import ErrorCode, ProtocolError, RemoteProtocolError, SessionClosed, code_name, is_session_error
from .frames import (
    FEATURES,
    MAX_BATCH_FRAMES,
    MAX_HOLDING,
    MAX_IDS,
    MAX_MESSAGE_WEIGHT,
    PROTOCOL_VERSION,
    Ack,
    Alert,
    Batch,
    Committed,
    Enroll,
    Enrolled,
    Error,
    Frame,
    Hello,
    Progress,
    Request,
    Result,
    StateReport,
    Welcome,
    chunked,
    message_weight,
    run_refs,
    split_refs,
)

Role = Literal["agent", "console"]

AGENT_FATAL: Final[Mapping[int, str]] = {
    ErrorCode.UNAUTHORIZED: "the daemon does not accept this agent's credentials (revoked or removed); "
                            "enroll this state directory again as a new agent: "
                            "tether-agent enroll --server URL --key KEY --force",
    ErrorCode.REPLACED: "another agent process connected with this identity and replaced this one; "
                        "run one tether-agent per state directory",
    ErrorCode.UNSUPPORTED_VERSION: f"the daemon does not speak protocol version {PROTOCOL_VERSION}; "
                                   "upgrade tether-agent (or the daemon)",
}
"""Session close codes after which an agent's reconnecting cannot help, and what to do instead."""

REFUSED_RESULT_CODES: Final = frozenset({ErrorCode.ILLEGAL_TRANSITION, ErrorCode.UNKNOWN_DELIVERY,
                                         ErrorCode.FORBIDDEN})
"""An ``error`` with one of these codes whose ``ref`` names a delivery: the daemon will never
take that delivery's result; an agent that kept it would re-send it for ever."""

AGENT_REPORTS: Final = (Ack, Progress, Result, Alert, StateReport)
"""What an agent sends once its session is open (each alone or in a ``batch``)."""


DRAINED: Final = "drained"
"""The feature of an agent that leaves once its queue is pushed, run and reported
(:class:`~.frames.Drained`)."""


def granted(announced: Iterable[str]) -> list[str]:
    """The features a welcome grants: those the hello announced that this side speaks too."""
    return [feature for feature in announced if feature in FEATURES]


# -- the client's side -------------------------------------------------------------------


def agent_hello(
    *, token: str, agent_id: str, hostname: str, platform: str, machine_uuid: str, agent_version: str,
    commands: Iterable[str], held: Sequence[tuple[int, int]], once: bool = False,
) -> Hello:
    """An agent's hello: who it is, what it serves, the features it speaks, and the runs it
    holds (``(delivery_id, run)``, of which it names the first :data:`~.frames.MAX_HOLDING`:
    the daemon may push one of the others again, and the journal acknowledges it again
    without running it). ``once``: an agent that leaves once its queue is done (``tether-agent
    once``) also asks to be told when it is (``drained``); a persistent one does not."""
    holding, holding_runs = split_refs(list(held[:MAX_HOLDING]))
    return Hello(
        role="agent", version=PROTOCOL_VERSION, token=token, agent_id=agent_id, hostname=hostname,
        platform=platform, machine_uuid=machine_uuid, agent_version=agent_version, commands=sorted(commands),
        holding=holding, holding_runs=holding_runs,
        features=[f for f in FEATURES if once or f != DRAINED],
    )


def console_hello(token: str) -> Hello:
    """A console's hello (an admin token; a console speaks no optional feature)."""
    return Hello(role="console", version=PROTOCOL_VERSION, token=token)


def enroll_request(
    key: str, *, machine_uuid: str, hostname: str, platform: str, tags: Iterable[str] = (),
    proof: tuple[str, str] | None = None,
) -> Enroll:
    """An enrollment's only frame; ``proof``: the ``(agent_id, token)`` of the agent this
    enrollee says it is (a re-enrollment keeps that identity)."""
    return Enroll(
        version=PROTOCOL_VERSION, key=key, machine_uuid=machine_uuid, tags=list(tags), hostname=hostname,
        platform=platform, agent_id=None if proof is None else proof[0], token="" if proof is None else proof[1],
    )


class State(enum.Enum):
    """Where a client's session is."""

    OPENING = enum.auto()
    """The first frame is sent (:meth:`ClientSession.opening`); its answer is awaited."""
    OPEN = enum.auto()
    """Welcomed: frames flow both ways."""
    CLOSED = enum.auto()
    """Refused, enrolled, or ended: nothing more is read."""


class ClientSession:
    """One client's side of one session: an agent's or a console's (``hello``), or an
    enrollment (``enroll``), in ``codec`` (agents speak MessagePack, consoles JSON).

    :meth:`opening` is the message to send first; :meth:`receive` turns each message read
    into frames; :meth:`closed` says what the end of the connection meant. An ``error`` with
    a session code read while open explains the close that follows it.
    """

    __slots__ = ("_error", "codec", "features", "first", "state", "welcome")

    def __init__(self, first: Hello | Enroll, codec: Codec = MSGPACK) -> None:
        self.first = first
        self.codec = codec
        self.state = State.OPENING
        self.welcome: Welcome | None = None
        """The daemon's welcome, once open."""
        self.features: frozenset[str] = frozenset()
        """The optional features both sides speak (announced by the hello, granted by the welcome)."""
        self._error: Error | None = None

    def __repr__(self) -> str:
        return f"ClientSession({type(self.first).__name__.lower()}, {self.state.name.lower()})"

    def opening(self) -> bytes:
        """The first message: the hello or the enroll, encoded."""
        return self.codec.encode(self.first)

    def receive(self, data: bytes | str) -> list[Frame | ProtocolError]:
        """The frames of one message from the daemon, in order (a ``batch``'s one by one);
        one that cannot be decoded is its :class:`~.errors.ProtocolError` in its place (the
        caller logs or skips it: a daemon never reuses a tag, so a frame type it does not
        know, ``unknown_frame``, is safe to skip).

        The first answer opens the session (a ``welcome``, returned alone) or ends the
        opening: an ``enrolled`` is returned and the session is closed; an ``error``, or a
        message that is no answer to the first frame, raises :class:`~.errors.SessionClosed`.
        """
        if self.state is State.OPENING:
            return [self._answer(data)]
        try:
            frame = decode_from_daemon(data)
        except ProtocolError as exc:
            return [exc]
        if type(frame) is Batch:
            frames = unbatch(frame, not isinstance(data, str), to_daemon=False)
        else:
            frames = [frame]
        for item in frames:
            if type(item) is Error and is_session_error(item.code):
                self._error = item
        return frames

    def _answer(self, data: bytes | str) -> Frame:
        first = self.first
        try:
            frame = decode_from_daemon(data)
        except ProtocolError as exc:
            raise self._failed(exc.code, f"the daemon's answer: {exc.message}") from None
        if isinstance(frame, Error):
            self.state = State.CLOSED
            raise self._refusal(frame.code, frame.name, frame.message, frame.retry_after)
        if isinstance(first, Hello) and isinstance(frame, Welcome) and frame.role == first.role:
            self.state = State.OPEN
            self.welcome = frame
            self.features = frozenset(first.features).intersection(frame.features)
            return frame
        if isinstance(first, Enroll) and isinstance(frame, Enrolled):
            self.state = State.CLOSED
            return frame
        expected = "welcome" if isinstance(first, Hello) else "enrolled"
        got = f"{frame.role} welcome" if isinstance(frame, Welcome) else frame.__struct_config__.tag
        raise self._failed(ErrorCode.UNEXPECTED_FRAME, f"expected {expected}, got {got}")

    def _failed(self, code: ErrorCode, message: str) -> SessionClosed:
        """The opening failed on this side: the daemon's answer is not one."""
        self.state = State.CLOSED
        return SessionClosed(int(code), code.slug, message)

    def _refusal(self, code: int, name: str, message: str, retry_after: float | None) -> SessionClosed:
        is_agent = isinstance(self.first, Hello) and self.first.role == "agent"
        return SessionClosed(code, name, message, retry_after=retry_after,
                             hint=AGENT_FATAL.get(code, "") if is_agent else "")

    def closed(self, code: int | None, reason: str = "") -> SessionClosed:
        """What the end of the connection meant: its close ``code`` and ``reason`` (``None``:
        no close frame came, the connection was lost: 1006), explained by the session error
        the daemon sent before it, if any (whose code wins over a close code that is not a
        session error's)."""
        opening, self.state = self.state is State.OPENING, State.CLOSED
        error = self._error
        if error is not None:
            if code is None or not is_session_error(code):
                code = error.code
            return self._refusal(code, error.name, error.message, error.retry_after)
        if code is None:
            return SessionClosed(1006, "connection_lost", "the connection was lost")
        if not reason:
            reason = (f"the daemon closed the connection without answering the {self.first.__struct_config__.tag}"
                      if opening else "the daemon closed the session")
        return self._refusal(code, code_name(code), reason, None)


class AgentWindow:
    """The agent's side of the window: how many pushed tasks it holds unacknowledged.

    The daemon promises at most ``size`` (the welcome's ``window``) pushed and not yet
    acknowledged: a task past that is refused (not journaled, not acknowledged; a daemon that
    keeps its word pushes it again later). Each burst of tasks leaves the window once it is
    journaled and acknowledged (or found to need no ack)."""

    __slots__ = ("refused", "size", "unacked")

    def __init__(self, size: int) -> None:
        self.size = size
        self.unacked = 0
        """Tasks pushed whose burst is not journaled and acknowledged yet."""
        self.refused = 0
        """Tasks refused for being pushed past the window."""

    def admit(self) -> bool:
        """A task was pushed: may it be journaled?"""
        if self.unacked >= self.size:
            self.refused += 1
            return False
        self.unacked += 1
        return True

    def acknowledged(self, tasks: int) -> None:
        """A burst of ``tasks`` admitted tasks was journaled and acknowledged."""
        self.unacked = max(0, self.unacked - tasks)


def batches(blobs: Sequence[bytes], max_bytes: int) -> list[list[bytes]]:
    """Encoded frames in order, as the frames of consecutive messages: each at most
    :data:`~.frames.MAX_BATCH_FRAMES` frames and ``max_bytes`` bytes (a larger frame alone).
    A message of one frame is sent as that frame, of several as a ``batch``."""
    out: list[list[bytes]] = []
    size = 0
    for blob in blobs:
        if not out or len(out[-1]) >= MAX_BATCH_FRAMES or size + len(blob) > max_bytes:
            out.append([])
            size = 0
        out[-1].append(blob)
        size += len(blob)
    return out


# -- the daemon's side -------------------------------------------------------------------


def peer_codec(data: bytes | str) -> Codec:
    """The codec a peer speaks, from its first message: binary is MessagePack, text JSON."""
    return JSON if isinstance(data, str) else MSGPACK


@dataclass(frozen=True, slots=True)
class Opening:
    """What a connection's first frame asks for."""

    frame: Hello | Enroll
    codec: Codec

    @property
    def kind(self) -> Literal["enroll", "agent", "console"]:
        """An enrollment, or the session of an agent or a console."""
        return "enroll" if isinstance(self.frame, Enroll) else self.frame.role

    @property
    def credential(self) -> str:
        """What the first frame presents: ``enroll_key``, ``agent_token`` or ``console_token``."""
        return "enroll_key" if isinstance(self.frame, Enroll) else f"{self.frame.role}_token"


def open_session(data: bytes | str) -> Opening:
    """The daemon's reading of a connection's first message: a ``hello`` or an ``enroll`` of
    this protocol version; else raise :class:`~.errors.RemoteProtocolError` with the session
    error to close with (``bad_hello``, ``unsupported_version``). Another frame type is
    refused from its tag, before its fields are decoded (:func:`~.codec.decode_first`)."""
    codec = peer_codec(data)
    try:
        frame = decode_first(data)
    except ProtocolError as exc:
        raise RemoteProtocolError(ErrorCode.BAD_HELLO, f"first frame must be hello or enroll: {exc.message}") from None
    if frame.version != PROTOCOL_VERSION:
        raise RemoteProtocolError(
            ErrorCode.UNSUPPORTED_VERSION,
            f"protocol version {frame.version} is not supported (this tetherd speaks {PROTOCOL_VERSION})",
        )
    return Opening(frame, codec)


def handshake_timeout(seconds: float) -> RemoteProtocolError:
    """The session error of a connection that sent no first frame within ``seconds``."""
    return RemoteProtocolError(ErrorCode.HANDSHAKE_TIMEOUT, f"no hello within {seconds:g} s of connecting")


def welcome(hello: Hello, *, session_id: str, server_time: float, agent_id: str | None = None,
            window: int | None = None) -> Welcome:
    """The daemon's answer to an accepted ``hello``: the features it grants, and for an agent
    its id (another than the hello's once it was merged) and window."""
    if hello.role == "console":
        return Welcome(version=PROTOCOL_VERSION, role="console", session_id=session_id, server_time=server_time,
                       features=granted(hello.features))
    assert window is not None, "an agent's welcome names its window"
    return Welcome(version=PROTOCOL_VERSION, role="agent", session_id=session_id, server_time=server_time,
                   agent_id=agent_id, window=window, features=granted(hello.features))


def unexpected(role: Role, frame: Frame) -> RemoteProtocolError:
    """The answer to a frame a ``role`` session may not send once open: an agent sends only
    :data:`AGENT_REPORTS`, a console only ``req``. (A console request from an agent is
    forbidden rather than unexpected: it names the request.)"""
    if role == "agent" and isinstance(frame, Request):
        return RemoteProtocolError(ErrorCode.FORBIDDEN, "agents cannot send console requests", ref=frame.id)
    tag = frame.__struct_config__.tag
    if role == "agent":
        return RemoteProtocolError(ErrorCode.UNEXPECTED_FRAME, f"unexpected {tag} frame in an agent session")
    return RemoteProtocolError(ErrorCode.UNEXPECTED_FRAME,
                               f"unexpected {tag} frame: a console session sends req frames")


def holding(hello: Hello) -> set[tuple[int, int]]:
    """The runs (``(delivery_id, run)``) an agent's hello says it holds: never pushed again
    in that session."""
    return set(run_refs(hello.holding, hello.holding_runs))


def committed(refs: list[tuple[int, int]]) -> list[Committed]:
    """The ``committed`` frames that name these runs, in order, at most
    :data:`~.frames.MAX_IDS` each (none for no runs)."""
    frames = []
    for chunk in chunked(refs, MAX_IDS):
        ids, runs = split_refs(chunk)
        frames.append(Committed(delivery_ids=ids, runs=runs))
    return frames


def refusal(error: ProtocolError, retry_after: float | None = None) -> tuple[Error, int, str]:
    """How the daemon ends a session over a session error: the ``error`` frame that says
    why (and when to come back), then the close whose code is the error's and whose reason
    is its name."""
    return error_frame(error, retry_after), int(error.code), error.code.slug


class Inbox:
    """The daemon's reading of an open session's messages, one at a time: each message's
    frames, what they cost the session's frame budget, and the answer to a message refused
    whole.

    :meth:`receive` reads a message and says how many frames to charge before they are
    decoded (a batch's: a session over its budget waits before its batch is decoded);
    :meth:`frames` then gives the frames to act on, and sets :attr:`charge` (the frames to
    charge once they are acted on) and :attr:`error`. A message is refused whole (no frames,
    :attr:`error` to answer it, one bad frame) when it does not decode, when it carries more
    than :data:`~.frames.MAX_MESSAGE_WEIGHT` frames and delivery ids together
    (:func:`~.frames.message_weight`), or, in a console session, when it is not a ``req``.
    In an agent session each frame that is not one of :data:`AGENT_REPORTS` is answered
    with :func:`unexpected` where it is dispatched (a type test per frame is made there
    anyway).
    """

    __slots__ = ("_binary", "_frame", "charge", "error", "role")

    def __init__(self, role: Role, codec: Codec) -> None:
        self.role = role
        self._binary = codec.binary
        self._frame: Frame | None = None
        self.charge = 0
        """Frames of the last message to charge once it is acted on (besides those charged before)."""
        self.error: Error | None = None
        """The answer to the last message when it is refused whole; None: act on its frames."""

    def receive(self, data: bytes | str) -> int:
        """Read one message; the frames to charge before :meth:`frames` decodes them (a
        batch's, in an agent session), else 0."""
        try:
            frame = decode_to_daemon(data)
        except ProtocolError as exc:
            self._frame = None
            self.error = error_frame(exc)
            return 0
        self._frame = frame
        if type(frame) is Batch and self.role == "agent":
            return len(frame.frames)
        return 0

    def frames(self) -> list[Frame | ProtocolError]:
        """The frames of the message last received, in order: a batch's unpacked, each that
        does not decode (or that a batch may not carry) its :class:`~.errors.ProtocolError`
        in its place; none when the message is refused whole (:attr:`error`)."""
        frame, self._frame = self._frame, None
        if frame is None:  # it did not decode
            self.charge = 1
            return []
        if self.role == "console":
            self.charge = 1
            if type(frame) is Request:
                self.error = None
                return [frame]
            self.error = error_frame(unexpected("console", frame))
            return []
        if type(frame) is Batch:
            upfront = len(frame.frames)
            frames = unbatch(frame, self._binary, to_daemon=True)
        else:
            upfront = 0
            frames = [frame]
        weight = message_weight(frames)
        self.charge = weight - upfront
        if weight > MAX_MESSAGE_WEIGHT:
            self.error = error_frame(ProtocolError(ErrorCode.INVALID_FRAME, (
                f"a message may carry at most {MAX_MESSAGE_WEIGHT} frames and delivery ids together, not "
                f"{weight}; send them in several messages")))
            return []
        self.error = None
        return frames
