"""How often each agent's state reports are stored: a token bucket per agent.

An enrolled agent is not trusted (issue 15): one that sends ``state`` frames in a loop must
cost tetherd a counter, not a write per frame. Each agent may have :data:`STATE_BURST`
reports stored at once and one more every :data:`STATE_SPACING` seconds (an agent reports
on session open, every ``state_interval`` of at least
:data:`~tether.protocol.agent_state.MIN_STATE_INTERVAL`, and once after applying a
configuration: well within it); the rest are counted (``/metrics``) and dropped. The
bucket is per agent, not per session, so reconnecting does not refill it. Memory: one
small entry per agent that reported.
"""

from __future__ import annotations

STATE_BURST = 6.0
STATE_SPACING = 10.0


class StateLimits:
    """Per-agent token buckets (see the module docstring)."""

    __slots__ = ("_agents", "dropped")

    def __init__(self) -> None:
        self._agents: dict[str, tuple[float, float]] = {}
        """agent id -> (tokens, when they were counted)."""
        self.dropped = 0
        """Reports over the limit since start, every agent."""

    def admit(self, agent_id: str, now: float) -> bool:
        """Whether the agent's report may be stored now (if not, it is counted as dropped)."""
        tokens, then = self._agents.get(agent_id, (STATE_BURST, now))
        tokens = min(STATE_BURST, tokens + max(0.0, now - then) / STATE_SPACING)
        if tokens < 1.0:
            self._agents[agent_id] = (tokens, now)
            self.dropped += 1
            return False
        self._agents[agent_id] = (tokens - 1.0, now)
        return True
