"""Agent sessions with no socket, for the daemon's unit tests: what one would push is read
from its queue, what it would send from its control queue."""

from __future__ import annotations

from tether.daemon.push import Push
from tether.daemon.session import AgentSession
from tether.protocol.codec import MSGPACK


def online(push: Push, agent_id: str, window: int = 10) -> AgentSession:
    """A session of ``agent_id``, registered as online."""
    session = AgentSession(None, MSGPACK, agent_id, "s1", window, set(), push.marks, push.stats)  # type: ignore[arg-type]
    push.register(session)
    return session


def queued(session: AgentSession) -> list[tuple[int, int, str]]:
    """(delivery, run, command) of what the session would push next."""
    return sorted((item.delivery_id, item.run, item.command) for *_, item in session.heap)
