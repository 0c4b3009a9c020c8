"""Which agents are online, and what their sessions are handed: committed deliveries to
push, and runs the daemon ended to drop.

One session per agent (a newer one replaces it). Nothing here writes to the store or to a
socket: a session's pusher does the I/O; what is offered here was committed first.
"""

from __future__ import annotations

import collections
from collections.abc import Callable

from ..protocol.errors import ErrorCode, ProtocolError
from ..protocol.frames import Frame
from ..protocol.lifecycle import CancelReason
from ..protocol.session import refusal
from .clock import Clock
from .effects import PushItem
from .metrics import Stats
from .session import AgentSession, SentMarks


class Push:
    def __init__(self, clock: Clock, stats: Stats, mark_sent: Callable[[list[int], float], None]) -> None:
        self.clock = clock
        self.stats = stats
        self.sessions: dict[str, AgentSession] = {}
        self.marks = SentMarks(clock, mark_sent)
        """Every session's due ``sent`` marks, on one timer."""
        self.identity_changes = 0
        """Counts the agent revocations, removals and merges this process committed, each
        counted in the same step as the sessions using the old credentials are ended: an
        agent login that sees it change while it read the token reads it again."""

    def __len__(self) -> int:
        return len(self.sessions)

    def online(self, agent_id: str) -> bool:
        return agent_id in self.sessions

    def register(self, session: AgentSession) -> AgentSession | None:
        """Make ``session`` the agent's session; return the one it replaces, if any."""
        old = self.sessions.get(session.agent_id)
        self.sessions[session.agent_id] = session
        return old

    def unregister(self, session: AgentSession) -> None:
        if self.sessions.get(session.agent_id) is session:
            del self.sessions[session.agent_id]

    def offer(self, items: list[PushItem]) -> None:
        """Hand committed deliveries to the sessions of agents that are online."""
        sessions = self.sessions
        by_agent: dict[str, list[PushItem]] = collections.defaultdict(list)
        for item in items:
            if item.agent_id in sessions:
                by_agent[item.agent_id].append(item)
        for agent_id, batch in by_agent.items():
            sessions[agent_id].offer(batch)

    def withdraw(self, agent_id: str, delivery_id: int, reason: CancelReason) -> None:
        """The daemon ended a run the agent may hold: its session drops it or tells it to."""
        session = self.sessions.get(agent_id)
        if session is not None:
            session.cancel(delivery_id, reason)

    def configure(self, agent_id: str, frame: Frame) -> bool:
        """Send an online agent its configuration; False if it is offline (it gets it when
        its session opens and it reports another one)."""
        session = self.sessions.get(agent_id)
        if session is None:
            return False
        session.send_control(frame)
        return True

    def cut_off(self, agent_id: str, reason: str, *, reconnect: bool = False) -> int:
        """After a commit that changed the agent's credentials, in the same step: count the
        change (a login in flight then reads the token again) and end the agent's session
        after the frames queued for it (cancels): with 4010, or, ``reconnect``, with 1012 so
        the agent logs in again (as the agent it was merged into). How many it ended."""
        self.identity_changes += 1
        session = self.sessions.get(agent_id)
        if session is None:
            return 0
        self.unregister(session)  # nothing more is offered to it
        if reconnect:
            session.end(1012, reason[:120])
        else:
            error, code, name = refusal(ProtocolError(ErrorCode.UNAUTHORIZED, reason))
            session.end(code, name, error)
        return 1
