"""Command-line flags the three tools share, so each is spelled, parsed and explained one way.

``tetherd``, ``tetherctl`` and ``tether-agent`` import nothing of each other; what their
command lines have in common lives here (argparse is the standard library's, and nothing
here does I/O):

* one duration syntax for every duration flag (``--ttl``, ``--expires-in``, ``--every``,
  ``--timeout``, ``--grace`` ...): ``30s``, ``5m``, ``1h30m``, ``7d`` or plain seconds
  (:func:`~tether.protocol.polling.parse_duration`);
* ``key create`` and ``token create``, which both ``tetherd`` (on the data directory) and
  ``tetherctl`` (through the daemon) offer: one :class:`Credential` each (:data:`CREDENTIALS`),
  with one set of flags, turned into one request (``key.create``, ``token.create``) which
  both serve with the daemon's own handler, and one line saying what was made;
* the ``examples:`` block of a command's ``--help``.

A bad value is refused by argparse with the flag's name and what to give instead, never
with an internal function name (``invalid _positive value``): every type here raises
``ArgumentTypeError`` with its own message.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any, NamedTuple

from .console import ROLES
from .methods import KEY_CREATE, TOKEN_CREATE, Method
from .polling import parse_duration
from .tags import RULE, tag_problem

DURATION = "30s, 5m, 1h30m, 7d or plain seconds"
"""How every duration flag's help says what it takes."""
DEFAULT_ROLE = "operator"
"""``token create``'s role when none is given, in tetherd and tetherctl alike: the least
that can task agents; an admin token (credentials) is asked for by name."""


def duration(text: str) -> float:
    """argparse type: a duration of more than 0 seconds."""
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if not 0 < seconds < math.inf:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}: it must be more than 0 s")
    return seconds


def whole_seconds(text: str) -> int:
    """argparse type: a duration rounded up to whole seconds (a task's ``--ttl``)."""
    return math.ceil(duration(text))


def positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1."""
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}: give a whole number") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}: it must be 1 or more")
    return number


def tag(text: str) -> str:
    """argparse type: a tag that keeps the one tag rule (:mod:`tether.protocol.tags`)."""
    problem = tag_problem(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return text


def add_key_flags(p: argparse.ArgumentParser) -> None:
    """The flags of ``key create``."""
    p.add_argument("--tag", action="append", default=[], type=tag, metavar="T",
                   help=f"a tag every agent enrolled with the key gets (repeatable; {RULE})")
    p.add_argument("--allow-requested-tags", action="store_true",
                   help="agents enrolling with it may ask for more tags (tether-agent enroll --tag); by default "
                        "they get the key's tags and an enrollment asking for others is refused")
    p.add_argument("--expires-in", type=duration, metavar="DURATION",
                   help=f"how long the key can be used: {DURATION} (default: until revoked)")
    p.add_argument("--uses", type=positive_int, metavar="N",
                   help="how many enrollments it allows (default: unlimited)")


def key_params(args: argparse.Namespace) -> dict[str, Any]:
    """The ``key.create`` parameters of the flags :func:`add_key_flags` added."""
    params: dict[str, Any] = {"tags": args.tag}
    if args.allow_requested_tags:
        params["allow_requested_tags"] = True
    if args.expires_in is not None:
        params["expires_in"] = args.expires_in
    if args.uses is not None:
        params["uses"] = args.uses
    return params


def add_token_flags(p: argparse.ArgumentParser) -> None:
    """The flags of ``token create``."""
    p.add_argument("--role", choices=ROLES, default=DEFAULT_ROLE,
                   help="viewer (reads), operator (default: also tasks, tags, schedules) or admin (also "
                        "tokens, enrollment keys, agent revocation)")
    p.add_argument("--label", default="", help="whose token this is (shown by token list)")


def token_params(args: argparse.Namespace) -> dict[str, Any]:
    """The ``token.create`` parameters of the flags :func:`add_token_flags` added."""
    return {"role": args.role, "label": args.label}


class Credential(NamedTuple):
    """A credential both ``tetherd`` and ``tetherctl`` create (``key create``, ``token create``)."""

    method: Method
    """The request both make of the flags: ``tetherctl`` sends it, ``tetherd`` serves it on the
    data directory with the daemon's handler (the same checks, the same operation)."""
    what: str
    """What it is called in messages (``enrollment key``)."""
    secret: str
    """The field of the answer that holds the clear value (``key``); its id is ``secret_id``."""
    add_flags: Callable[[argparse.ArgumentParser], None]
    """Add the command's flags to a parser."""
    params: Callable[[argparse.Namespace], dict[str, Any]]
    """The request's params of the flags ``add_flags`` added."""

    def created(self, ident: int) -> str:
        """What both tools say on stderr once it is made (the secret goes alone to stdout)."""
        return f"{self.what} {ident} created; it is shown only this once (tetherd keeps a SHA-256 digest)"


CREDENTIALS: dict[str, Credential] = {
    "key": Credential(KEY_CREATE, "enrollment key", "key", add_key_flags, key_params),
    "token": Credential(TOKEN_CREATE, "admin token", "token", add_token_flags, token_params),
}
"""``key create`` and ``token create``, by the command's name."""


def examples(*lines: str) -> str:
    """A ``--help`` block of example command lines (``#`` comments kept)."""
    return "examples:\n" + "".join(f"  {line}\n" for line in lines)
