"""Automation hooks (issue 20, after Check Point's SmartTasks): what a hook is, the triggers
it attaches to and the payload each sends, checked the same way by tetherctl and tetherd.

A hook is a trigger plus an action. A ``before-*`` trigger runs inline and may veto its
operation (SmartTasks: the action answers ``{"result": "failure", "message": ...}``); an
``after-*`` trigger only notifies, from tetherd's persistent outbox. Actions: ``script`` (a
file of ``<data-dir>/scripts/`` named without a path, given the payload as base64 JSON),
``web`` (an HTTPS POST, signed) and ``email``. No I/O here: the daemon runs the actions
(:mod:`tether.daemon.hook_actions`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from typing import Any, Literal
from urllib.parse import urlsplit

import msgspec

from .console import Params, View
from .errors import ErrorCode, ProtocolError
from .tags import check_tags
from .values import value_problem

PAYLOAD_VERSION = 1
"""The version of every payload (its ``version`` key): a key is never removed or changes
meaning within a version; new keys may appear."""

COMMON_KEYS = ("version", "trigger", "hook", "at", "who")
"""Keys of every payload: the payload version, the trigger and hook, when (Unix seconds)
and who did it (``admin token 3 (operator)``, ``agent ID``, ``tetherd``)."""


class Trigger(msgspec.Struct, frozen=True):
    """One trigger: its name, whether it runs before its operation (and may veto it), and
    the keys of its payload besides :data:`COMMON_KEYS`."""

    name: str
    before: bool
    keys: tuple[str, ...]
    summary: str


TRIGGERS: dict[str, Trigger] = {t.name: t for t in (
    Trigger("before-task", True, ("task",), "a task is about to be created (a veto refuses it)"),
    Trigger("after-task", False, ("task",), "a task was created"),
    Trigger("after-task-done", False, ("task",), "every delivery of a task reached a final state"),
    Trigger("before-enroll", True, ("agent",), "an agent is about to enroll (a veto refuses it)"),
    Trigger("after-enroll", False, ("agent",), "an agent enrolled"),
    Trigger("agent-online", False, ("agent",), "an agent's session opened"),
    Trigger("agent-offline", False, ("agent",), "an agent's session ended"),
    Trigger("after-schedule-fired", False, ("schedule", "task"), "a recurring schedule created its task"),
    Trigger("alert", False, ("agent", "alert"), "an agent raised a new distinct alert (not a repeat)"),
    Trigger("config-drift", False, ("agent", "config"),
            "an agent's session opened with a configuration other than its desired one"),
    Trigger("agent-replaced", False, ("agent", "replaced"),
            "an enrollment from another machine UUID replaced an agent (re-imaged, cloned)"),
)}
"""Every trigger by name, in the order shown by ``tetherctl hooks add --help``."""

ACTIONS = ("script", "web", "email")

DEFAULT_TIMEOUT = 5.0
MAX_TIMEOUT = 60.0
"""A before-hook adds at most its timeout to its operation: 5 s by default, 60 s at most."""

NAME_MAX = 64
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_SCRIPT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_FINGERPRINT = re.compile(r"[0-9a-f]{64}")
_EMAIL = re.compile(r"[^@\s,<>]+@[^@\s,<>]+")
TEXT_MAX = 1024
"""The longest description, subject, URL or secret."""
BODY_MAX = 16_384
DATA_MAX = 16_384
"""The longest custom data, as JSON."""
MAX_RECIPIENTS = 20


def _bad(message: str) -> ProtocolError:
    return ProtocolError(ErrorCode.INVALID_PARAMS, message)


def check_name(name: str) -> None:
    """A hook's name: 1-64 letters, digits and . _ - (case-sensitive: ``A`` and ``a`` are two)."""
    if len(name) > NAME_MAX or not _NAME.fullmatch(name):
        raise _bad(f"invalid hook name {name!r}: 1-{NAME_MAX} letters, digits and . _ - (starting with a letter "
                   "or digit)")


def check_script(name: str) -> None:
    """A script is named, never pathed: a file directly in ``<data-dir>/scripts/``."""
    if len(name) > NAME_MAX or not _SCRIPT.fullmatch(name) or ".." in name:
        raise _bad(f"invalid script name {name!r}: give the name of a file in <data-dir>/scripts/, not a path "
                   f"(1-{NAME_MAX} letters, digits and . _ -)")


def normal_fingerprint(text: str) -> str:
    """A SHA-256 fingerprint as 64 lowercase hex digits (colons and spaces dropped)."""
    digits = re.sub(r"[\s:]", "", text).lower()
    if not _FINGERPRINT.fullmatch(digits):
        raise _bad(f"invalid fingerprint {text!r}: the SHA-256 of the server's certificate, 64 hex digits "
                   "(tetherctl hooks fingerprint https://HOST:PORT prints it)")
    return digits


def check_url(url: str) -> None:
    """HTTPS only: a hook's payload and shared secret never travel in clear."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "https":
        raise _bad(f"a web hook's URL must start with https:// (not {url!r}): its payload and shared secret "
                   "never travel in clear")
    try:
        port = parts.port
    except ValueError:
        port = -1
    if not parts.hostname or port == -1 or len(url) > TEXT_MAX or any(c.isspace() for c in url):
        raise _bad(f"invalid URL {url!r}: https://HOST[:PORT][/PATH]")


def _check_text(what: str, text: str, limit: int = TEXT_MAX) -> None:
    if len(text) > limit:
        raise _bad(f"{what} is {len(text)} characters long; at most {limit}")


def check_data(data: Any, trigger: str) -> None:
    """Custom data: a JSON object, merged into the payload, none of whose keys is one the
    trigger's payload has (it would overwrite it)."""
    if not isinstance(data, dict):
        raise _bad(f"custom data must be a JSON object, not {type(data).__name__}")
    problem = value_problem(data)
    if problem is not None:
        raise _bad(f"custom data holds {problem}")
    if len(json.dumps(data)) > DATA_MAX:
        raise _bad(f"custom data is larger than {DATA_MAX} bytes as JSON")
    own = (*COMMON_KEYS, *TRIGGERS[trigger].keys)
    clash = sorted(k for k in data if k in own)
    if clash:
        raise _bad(f"custom data key(s) {', '.join(map(repr, clash))} collide with the {trigger} payload's own "
                   f"keys ({', '.join(own)}); rename them")


class HookAdd(Params):
    """A new hook: its trigger, exactly one action (``script``, ``url`` or ``email``) and its properties."""

    name: str
    trigger: str
    script: str | None = None
    """The file's name in ``<data-dir>/scripts/``."""
    url: str | None = None
    fingerprint: str | None = None
    """The SHA-256 of the web server's certificate: trusted by it alone (a self-signed
    server); without one, the system's CAs must trust the server."""
    secret: str | None = None
    """Sent as ``X-Tether-Shared-Secret``; the key of ``X-Tether-Signature``. Never shown back."""
    email: list[str] | None = None
    subject: str | None = None
    body: str | None = None
    data: Any = {}
    timeout: float = DEFAULT_TIMEOUT
    on_timeout: Literal["fail-open", "fail-closed"] = "fail-open"
    """What a before-hook's timeout or failure means: continue (``fail-open``) or veto."""
    tags: list[str] = []
    description: str = ""
    enabled: bool = True

    def check(self) -> None:
        check_name(self.name)
        if self.trigger not in TRIGGERS:
            raise _bad(f"unknown trigger {self.trigger!r} (known: {', '.join(TRIGGERS)})")
        given = [a for a, v in (("script", self.script), ("url", self.url), ("email", self.email)) if v is not None]
        if len(given) != 1:
            raise _bad("give exactly one action: script, url or email")
        if self.script is not None:
            check_script(self.script)
        if self.url is not None:
            check_url(self.url)
        elif self.fingerprint is not None or self.secret is not None:
            raise _bad("fingerprint and secret are for a web hook (url)")
        if self.fingerprint is not None:
            normal_fingerprint(self.fingerprint)
        if self.email is not None:
            if not 1 <= len(self.email) <= MAX_RECIPIENTS:
                raise _bad(f"an email hook sends to 1-{MAX_RECIPIENTS} addresses")
            for address in self.email:
                if len(address) > TEXT_MAX or not _EMAIL.fullmatch(address):
                    raise _bad(f"invalid email address {address!r}")
        elif self.subject is not None or self.body is not None:
            raise _bad("subject and body are for an email hook")
        if not 0 < self.timeout <= MAX_TIMEOUT:
            raise _bad(f"timeout must be more than 0 and at most {MAX_TIMEOUT:g} seconds, not {self.timeout:g}")
        check_data(self.data, self.trigger)
        check_tags(self.tags)
        for what, text, limit in (("description", self.description, TEXT_MAX),
                                  ("secret", self.secret or "", TEXT_MAX),
                                  ("subject", self.subject or "", TEXT_MAX),
                                  ("body", self.body or "", BODY_MAX)):
            _check_text(what, text, limit)

    @property
    def action(self) -> str:
        return "script" if self.script is not None else "web" if self.url is not None else "email"


class HookName(Params):
    name: str

    def check(self) -> None:
        check_name(self.name)


class HookRuns(Params):
    name: str
    limit: int = 20

    def check(self) -> None:
        check_name(self.name)
        if not 1 <= self.limit <= 1000:
            raise _bad(f"limit must be 1-1000, not {self.limit}")


class HookFingerprint(Params):
    url: str

    def check(self) -> None:
        check_url(self.url)


class HookRunView(View):
    """One run of a hook (every run is recorded, after-hooks once per attempt)."""

    hook: str
    trigger: str
    started_at: float
    duration: float
    outcome: Literal["ok", "vetoed", "error", "timeout"]
    message: str = ""
    attempt: int = 1
    test: bool = False
    """Fired by ``tetherctl hooks test``."""


class HookView(View):
    """A hook as shown: never its shared secret (``secret_set`` says whether it has one)."""

    name: str
    trigger: str
    action: Literal["script", "web", "email"]
    target: str
    """The script's name, the URL, or the recipients."""
    enabled: bool
    timeout: float
    on_timeout: str
    description: str = ""
    tags: list[str] = []
    data: dict[str, Any] = {}
    fingerprint: str = ""
    secret_set: bool = False
    subject: str = ""
    body: str = ""
    created_at: float = 0.0
    pending: int = 0
    """After-hook runs waiting in the outbox."""
    last_run: HookRunView | None = None


class HookRemoved(View):
    name: str
    pending_dropped: int = 0


class Fingerprint(View):
    url: str
    sha256: str
    subject: str = ""


# -- what the daemon sends and reads ---------------------------------------------------------


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """``X-Tether-Signature``: hex HMAC-SHA256, keyed by the shared secret, of the
    ``X-Tether-Timestamp`` value followed by the body. A receiver recomputes it and refuses
    a timestamp too old (a replay)."""
    return hmac.new(secret.encode(), timestamp.encode() + body, hashlib.sha256).hexdigest()


MESSAGE_MAX = 500
"""The longest message kept from an action's answer (a veto's reason, an error)."""


def verdict(answer: bytes) -> tuple[bool, str] | None:
    """A before-hook's answer (a script's stdout, a web response's body): ``(veto, message)``
    if it holds a JSON object with ``result`` (the last line that does, for a script that
    printed more), None if it holds none. ``{"result": "failure"}`` vetoes."""
    text = answer.decode(errors="replace").strip()
    for candidate in (text, *reversed(text.splitlines())):
        try:
            obj = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(obj, dict) and "result" in obj:
            message = obj.get("message", "")
            message = message if isinstance(message, str) else json.dumps(message)
            return obj["result"] == "failure", message[:MESSAGE_MAX]
    return None


_FIELD = re.compile(r"\{([A-Za-z0-9_.-]+)\}")


def render(template: str, payload: dict[str, Any]) -> str:
    """An email's subject or body: each ``{key.sub}`` is the payload's value there (text as
    is, anything else as JSON); a name the payload lacks stays as written. Nothing else is
    interpreted (no format-string attributes)."""

    def value(match: re.Match[str]) -> str:
        node: Any = payload
        for part in match.group(1).split("."):
            if not isinstance(node, dict) or part not in node:
                return match.group(0)
            node = node[part]
        return node if isinstance(node, str) else json.dumps(node)

    return _FIELD.sub(value, template)
