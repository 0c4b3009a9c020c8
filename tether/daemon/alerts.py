"""How many alerts each agent may have stored: a token bucket per agent, and the count of
what it sent beyond it.

An enrolled agent is not trusted (issue 15): one that floods alerts must cost tetherd a
counter, not a row or a write per alert. Each agent may have ``alerts_per_minute`` stored
on average, ``alert_burst`` at once; the rest are *counted* (in memory at once, in the
store with the agent's next stored alert or when its session ends, at most one write per
:data:`DROPS_WRITE_EVERY` otherwise) and never stored. The bucket is per agent, not per
session: reconnecting does not refill it. Memory: one small entry per agent that sent an
alert (enrolled agents only).
"""

from __future__ import annotations

DROPS_WRITE_EVERY = 10.0
"""Seconds between two writes of one agent's dropped-alert count during a flood."""


class _Bucket:
    __slots__ = ("dropped", "tokens", "updated", "written")

    def __init__(self, tokens: float, now: float) -> None:
        self.tokens = tokens
        self.updated = now
        self.dropped = 0
        """Alerts over the limit not yet written to the store."""
        self.written = now
        """When the dropped count was last handed to the store."""


class AlertLimits:
    """Per-agent token buckets (see the module docstring)."""

    def __init__(self, per_minute: float, burst: int) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self._agents: dict[str, _Bucket] = {}
        self.dropped_total = 0
        """Alerts over the limit since start, every agent (``/metrics``)."""

    def admit(self, agent_id: str, count: int, now: float) -> int:
        """How many of ``count`` alerts the agent may have stored now; the rest are counted
        as dropped."""
        bucket = self._agents.get(agent_id)
        if bucket is None:
            bucket = self._agents[agent_id] = _Bucket(self.burst, now)
        else:
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
        admitted = min(count, int(bucket.tokens))
        bucket.tokens -= admitted
        over = count - admitted
        if over:
            bucket.dropped += over
            self.dropped_total += over
        return admitted

    def take_dropped(self, agent_id: str, now: float, *, force: bool = False) -> int:
        """The agent's dropped count not yet written, to write now: with ``force`` (the
        agent's alerts are being written anyway, or its session ended), or when the last
        write of it is :data:`DROPS_WRITE_EVERY` old."""
        bucket = self._agents.get(agent_id)
        if bucket is None or not bucket.dropped:
            return 0
        if not force and now - bucket.written < DROPS_WRITE_EVERY:
            return 0
        dropped, bucket.dropped, bucket.written = bucket.dropped, 0, now
        return dropped

    def give_back(self, agent_id: str, dropped: int) -> None:
        """A write of ``dropped`` failed: count them again, to be written later."""
        bucket = self._agents.get(agent_id)
        if bucket is not None:
            bucket.dropped += dropped
