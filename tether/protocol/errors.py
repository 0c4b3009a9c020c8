"""The one registry of error codes (after NATS' ``server/errors.json``), and the exception tree.

Two families, never mixed:

* ``1xxx`` — *request errors*. Answered in-session with an :class:`~tether.protocol.frames.Error`
  frame whose ``ref`` names the request (or delivery) at fault. The session stays open.
* ``4xxx`` — *session errors*. Sent as an ``Error`` frame and then used as the WebSocket
  close code (RFC 6455 §7.4.2 reserves 4000-4999 for applications). The session ends.

Codes are stable: a code is never reused for another meaning, and new errors get new codes.
Peers see the code, the name and a message that says what to do; never a traceback.

Every exception tether raises about the protocol is one of these (as websockets writes its
tree down in one docstring)::

    Exception
    ├── ProtocolError            a frame or a request broke a rule: a registry code, a message,
    │   │                        and the request or delivery at fault (``ref``)
    │   ├── RemoteProtocolError  the peer's fault: it is answered with the code (a 1xxx error
    │   │   │                    leaves the session open, a 4xxx one ends it)
    │   │   └── lifecycle.IllegalTransition   a report the delivery's state cannot take
    │   └── LocalProtocolError   this side broke its own rules: a bug, logged with details;
    │                            the peer is told only ``internal``
    └── DaemonError              what a client (agent, tetherctl) was told by the daemon:
        │                        ``code``, ``name``, ``message``, ``retry_after``
        ├── SessionClosed        the daemon refused the opening (``hello``, ``enroll``) or ended
        │                        the session: a 4xxx code, or a WebSocket close code
        └── RequestRefused       the daemon refused one request (1xxx); the session goes on

A plain :class:`ProtocolError` is a rule checked on this side before anything is sent (a
console's params, a selector): the caller's input was wrong.
"""

from __future__ import annotations

import enum


class ErrorCode(enum.IntEnum):
    # -- request errors: answered, the session stays open ---------------------------------
    MALFORMED_FRAME = 1100
    """The frame is not valid MessagePack / JSON."""
    UNKNOWN_FRAME = 1101
    """The frame's tag ``t`` names no frame type."""
    INVALID_FRAME = 1102
    """A field is missing or has the wrong type."""
    UNEXPECTED_FRAME = 1103
    """A valid frame that this peer may not send now (e.g. a console sending ``ack``)."""
    INVALID_ALERT = 1104
    """An agent's alert breaks a rule its type cannot say (``details`` not plain JSON or too
    large): it is not stored, and ``ref`` names it so the agent drops it."""
    UNKNOWN_METHOD = 1200
    """A console request names no method."""
    INVALID_PARAMS = 1201
    """A console request's params are missing, of the wrong type or out of range."""
    INVALID_ACTION = 1202
    """A LimaCharlie-style action object is not understood."""
    UNKNOWN_AGENT = 1300
    """No enrolled agent has this id."""
    UNKNOWN_TAG = 1301
    """No agent carries this tag (tag an agent first: ``tetherctl tag add``)."""
    UNKNOWN_TASK = 1302
    """No task has this id."""
    UNKNOWN_COMMAND = 1303
    """The target agent does not serve this command."""
    ILLEGAL_TRANSITION = 1304
    """A delivery state change that the state table forbids (e.g. a result for a cancelled delivery)."""
    UNKNOWN_DELIVERY = 1305
    """An agent reported on a delivery id the daemon does not know."""
    UNKNOWN_SCHEDULE = 1306
    """No recurring schedule has this name (``tetherctl schedule list`` shows them)."""
    SCHEDULE_EXISTS = 1307
    """A recurring schedule with this name exists already; names are unique (and case-sensitive)."""
    UNKNOWN_TOKEN = 1308
    """No admin token has this id (``tetherctl token list`` shows them)."""
    UNKNOWN_KEY = 1309
    """No enrollment key has this id (``tetherctl key list`` shows them)."""
    LAST_ADMIN_TOKEN = 1310
    """Revoking this token would leave no admin token: create another admin token first."""
    UNKNOWN_ALERT = 1320
    """No alert has this id (``tetherctl alerts`` lists them)."""
    UNKNOWN_HOOK = 1330
    """No hook has this name (``tetherctl hooks list`` shows them; names are case-sensitive)."""
    HOOK_EXISTS = 1331
    """A hook with this name exists already; names are unique (and case-sensitive)."""
    UNKNOWN_SCRIPT = 1332
    """No usable script of this name in ``<data-dir>/scripts/`` (an executable regular file,
    owned by tetherd's user or root and writable by no one else)."""
    INVALID_CONFIG = 1340
    """A configuration key or value refused when it is set (an unknown key, a value of the
    wrong type or out of range): nothing of the request is stored."""
    FORBIDDEN = 1403
    """The peer is authenticated but may not do this (another agent's delivery, a viewer creating tasks)."""
    VETOED = 1422
    """A before-hook refused the operation (its message says why: ``tetherctl hooks runs NAME``)."""
    RATE_LIMITED = 1429
    """Too many frames too fast; slow down (``retry_after`` says for how long)."""
    STORAGE_UNAVAILABLE = 1503
    """The store refuses writes (disk full, locked); reads and sessions keep working."""
    INTERNAL = 1500
    """A bug in tetherd; logged with details on the daemon side."""

    # -- session errors: sent, then used as the WebSocket close code -----------------------
    BAD_HELLO = 4001
    """The first frame was not a valid ``hello`` or ``enroll``."""
    UNSUPPORTED_VERSION = 4002
    """The peer speaks a protocol version this daemon does not."""
    HANDSHAKE_TIMEOUT = 4003
    """No valid first frame within the handshake timeout."""
    UNAUTHORIZED = 4010
    """Wrong or missing token, or an agent id that is not enrolled (also the proof of a
    re-enrollment: the agent id and token it presents)."""
    ENROLL_KEY_UNKNOWN = 4011
    """The enrollment key is unknown or was revoked."""
    ENROLL_KEY_EXPIRED = 4012
    """The enrollment key has expired; ask for a new one."""
    ENROLL_KEY_EXHAUSTED = 4013
    """The enrollment key allowed a number of uses, and they are used up."""
    ENROLL_TAGS_REFUSED = 4014
    """The enrollment asked for tags it may not have: tags beyond its key's (unless the key
    was made with ``--allow-requested-tags``), or, re-enrolling an agent, tags it does not
    carry. Enroll without them; operators change an agent's tags (``tetherctl tag add``)."""
    ENROLL_VETOED = 4015
    """A before-enroll hook refused the enrollment (its message says why)."""
    REPLACED = 4020
    """A newer session for the same agent opened; the older one is closed with this code."""
    LOGIN_THROTTLED = 4028
    """Too many failed logins or enrollments from this address: not even looked at; retry
    after ``retry_after`` seconds (it doubles with each failure past the first few)."""
    TOO_MANY_SESSIONS = 4029
    """Shed load: retry after ``retry_after`` seconds."""
    SERVER_ERROR = 4500
    """tetherd could not serve the session (e.g. its store is unavailable); retry later."""

    @property
    def is_session_error(self) -> bool:
        """A 4xxx code: the session ends (see :func:`is_session_error` for a peer's number)."""
        return is_session_error(self.value)

    @property
    def slug(self) -> str:
        return self.name.lower()


class ProtocolError(Exception):
    """An error a peer must be told about, with its registry code.

    Raised by the sans-I/O layer and by the daemon's request handlers; turned into an
    ``Error`` frame (and, for session errors, a close code) by the driver.
    """

    def __init__(self, code: ErrorCode, message: str, *, ref: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.ref = ref

    def __repr__(self) -> str:
        return f"ProtocolError({self.code.name}, {self.message!r})"


class RemoteProtocolError(ProtocolError):
    """The peer broke the protocol's rules (e.g. a report on a delivery that was
    cancelled): its fault, answered to it with the code; the session goes on for 1xxx."""


class LocalProtocolError(ProtocolError):
    """This side broke its own rules (a state change its lifecycle table does not list):
    a bug, logged with details; the peer is told only ``internal``."""


def is_session_error(code: int) -> bool:
    """``code`` (as an ``Error`` frame or a close carries it, perhaps one this registry does
    not know yet) is a session error: 4xxx, the session ends."""
    return 4000 <= code < 5000


def code_name(code: int, unknown: str = "closed") -> str:
    """The registry name of ``code``; ``unknown`` for a code it does not list (a WebSocket
    close code such as 1000 or 1011, or a newer daemon's)."""
    try:
        return ErrorCode(code).slug
    except ValueError:
        return unknown


class DaemonError(Exception):
    """What a client was told by the daemon: the registry ``code`` and ``name``, the daemon's
    ``message``, and ``retry_after`` (seconds to wait before trying again, if it said)."""

    def __init__(self, code: int, name: str, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(f"{name} ({code}): {message}")
        self.code = code
        self.name = name
        self.message = message
        self.retry_after = retry_after


class SessionClosed(DaemonError):
    """The daemon refused the opening (``hello`` or ``enroll``) or ended the session: a 4xxx
    code from an ``error`` frame, or the WebSocket close code (1006: the connection was lost).

    ``hint`` says what to do when retrying cannot help (an agent's fatal codes:
    :data:`tether.protocol.session.AGENT_FATAL`)."""

    def __init__(self, code: int, name: str, message: str, *, retry_after: float | None = None,
                 hint: str = "") -> None:
        super().__init__(code, name, message, retry_after=retry_after)
        self.hint = hint

    def __str__(self) -> str:
        text = f"{self.name} ({self.code}): {self.message}"
        return f"{text}; {self.hint}" if self.hint else text


class RequestRefused(DaemonError):
    """The daemon refused one request (a 1xxx ``error`` whose ``ref`` names it); the session
    goes on."""
