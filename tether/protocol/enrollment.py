"""What an enrollment gets: which agent it is and which tags it carries (issue 15, 1 and 4).

The rules, decided here without I/O (the store reads the facts and applies the answer):

* An enrollment never takes over an enrolled agent's identity without proof. An enrollee
  that presents an agent's id and its current token re-enrolls as that agent: same id,
  same token, same tags. One whose proof fails is refused (``unauthorized``): it asked to
  be that agent and is not, so it is never silently made another one.
* A proof from another machine UUID than the agent's (the machine was re-imaged, or cloned
  with its state directory: Armadito "Enrollment", a changed machine UUID gets a new id)
  makes a new agent that *replaces* the proved one: it keeps that agent's tags (it held its
  token) and asks for no others; the old agent is kept, marked replaced by it, its token
  void, until an admin removes it.
* Without proof it is a new agent. If another agent was enrolled from the same machine
  UUID, the new one is marked a *possible clone* of it (the UUID is no secret: it is in
  ``/etc/machine-id`` and in every hello); the old agent, its token and its deliveries
  are untouched. An admin then approves it (an agent of its own), merges it (it takes
  over the old identity) or removes it.
* A new agent gets its key's tags. Tags it asks for beyond them are granted only when the
  key was made to allow it (``--allow-requested-tags``); else the enrollment is refused,
  naming them. A re-enrollment changes no tags; afterwards only operators change them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from .errors import ErrorCode, ProtocolError
from .tags import check_tags


class Proof(NamedTuple):
    """What the store found for a re-enrollment's agent id and token."""

    agent_id: str
    """The agent the enrollee proved it is (an agent merged into another: that other)."""
    ok: bool
    """The token is that agent's current one (not revoked, not removed)."""
    tags: Sequence[str] = ()
    """The tags the agent carries."""
    machine_uuid: str = ""
    """The machine UUID the agent enrolled (or last re-enrolled) from."""


class Decision(NamedTuple):
    agent_id: str | None
    """The enrolled agent re-enrolling; None: a new agent."""
    tags: list[str]
    """The tags it carries after the enrollment."""
    clone_of: str | None = None
    """A new agent's possible original: the agent enrolled from the same machine UUID."""
    replaces: str | None = None
    """A new agent's predecessor: the agent it proved it was, from another machine UUID."""


def decide(*, key_tags: Sequence[str], allow_requested: bool, asked: Sequence[str], proof: Proof | None,
           twin: str | None, machine_uuid: str = "") -> Decision:
    """The outcome of an enrollment, or :class:`ProtocolError` (``unauthorized`` for a
    failed proof, ``enroll_tags_refused`` for tags it may not have).

    ``asked``: the tags the enrollee asks for, already checked against the tag rule;
    ``proof``: None if it presented none; ``twin``: an enrolled agent with its machine UUID;
    ``machine_uuid``: the enrollee's (empty: not given).
    """
    if proof is not None:
        if not proof.ok:
            raise ProtocolError(ErrorCode.UNAUTHORIZED, (
                f"agent {proof.agent_id}'s token was not accepted (revoked, removed, or not this tetherd's): "
                "re-enrolling as an agent takes its current token"))
        extra = sorted(set(asked) - set(proof.tags))
        if extra:
            raise ProtocolError(ErrorCode.ENROLL_TAGS_REFUSED, (
                f"re-enrolling agent {proof.agent_id} keeps its tags ({_names(proof.tags)}); {_names(extra)} "
                f"refused: tags change only through operators (tetherctl tag add {proof.agent_id} TAG)"))
        if machine_uuid and proof.machine_uuid and machine_uuid != proof.machine_uuid:
            return Decision(None, sorted(proof.tags), replaces=proof.agent_id)
        return Decision(proof.agent_id, sorted(proof.tags))
    extra = sorted(set(asked) - set(key_tags))
    if extra and not allow_requested:
        raise ProtocolError(ErrorCode.ENROLL_TAGS_REFUSED, (
            f"this enrollment key gives the tags {_names(key_tags)} and allows no others; {_names(extra)} "
            "refused (enroll without them and have an operator add them, tetherctl tag add, or use a key "
            "made with --allow-requested-tags)"))
    return Decision(None, check_tags([*key_tags, *asked], ErrorCode.ENROLL_TAGS_REFUSED), twin)


def _names(tags: Sequence[str]) -> str:
    return ", ".join(sorted(tags)) or "(none)"
