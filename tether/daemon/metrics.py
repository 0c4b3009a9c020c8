"""``GET /metrics``: Prometheus text exposition, rendered from live counters on request.

prometheus-client does the text format; the numbers are read at scrape time (:class:`Stats`,
the store's, what is online and pending), so nothing is updated per frame but plain integer
counters.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..protocol.lifecycle import DeliveryState
from .clock import Clock
from .store import StoreStats


class Stats:
    """Counters for /metrics."""

    __slots__ = ("_tasks", "closed", "credential_failures", "frames_in", "frames_out", "logins_throttled", "pushed",
                 "sessions_total", "shed", "states_dropped", "throttled", "untold")

    def __init__(self) -> None:
        self.frames_in = 0
        self.frames_out = 0
        self.pushed = 0
        self.sessions_total: collections.Counter[str] = collections.Counter()
        self.shed: collections.Counter[str] = collections.Counter()
        """Connections shed, by reason: ``address`` (over its address's limit: told 4029, or
        closed unanswered far over it) or ``total`` (over the limit on all connections)."""
        self.closed = 0
        """WebSocket connections that ended (of any kind): what the full collections free."""
        self.throttled = 0
        """Times a session's reading was paused for its frame budget."""
        self.untold = 0
        """Error replies to bad frames not sent because the peer was not reading them."""
        self.credential_failures: collections.Counter[str] = collections.Counter()
        """Failed logins and enrollments, by what was presented: ``console_token`` (an admin
        token), ``agent_token``, ``enroll_key``."""
        self.logins_throttled = 0
        """Logins and enrollments refused unread because their address failed too often (4028)."""
        self.states_dropped = 0
        """Agents' state reports over their rate limit, dropped unstored (:mod:`.state_reports`)."""
        self._tasks: tuple[float, int] | None = None

    def tasks_alive(self, max_age: float, now: float) -> int:
        """How many asyncio tasks of this loop are alive, counted at most every ``max_age``
        seconds (the count walks every task); ``now``: the monotonic clock."""
        if self._tasks is None or now - self._tasks[0] >= max_age:
            self._tasks = (now, len(asyncio.all_tasks()))
        return self._tasks[1]


TASKS_EVERY = 1.0
"""Seconds a count of the live asyncio tasks is reused for: counting walks every task, and a
scrape must not cost in proportion to the fleet (docs/performance.md)."""


class Readings(Protocol):
    """What a scrape reads, besides the counters."""

    @property
    def stats(self) -> Stats: ...
    @property
    def clock(self) -> Clock: ...
    def store_stats(self) -> StoreStats: ...
    def agents_online(self) -> int: ...
    def consoles_open(self) -> int: ...
    def timers_pending(self) -> int: ...
    def connections_open(self) -> int | None:
        """Connections counted from TCP accept; None if not counted."""
    def hook_outbox(self) -> tuple[int, int]:
        """After-hook runs waiting in the outbox, and those dropped because it was full."""


class _Collector(Collector):
    def __init__(self, readings: Readings) -> None:
        self.readings = readings

    def collect(self) -> Iterator[Metric]:
        r = self.readings
        counts = r.stats
        sessions = GaugeMetricFamily("tether_sessions_open", "Open sessions by role", labels=["role"])
        sessions.add_metric(["agent"], r.agents_online())
        sessions.add_metric(["console"], r.consoles_open())
        yield sessions
        opened = CounterMetricFamily("tether_sessions_opened", "Sessions opened since start", labels=["role"])
        for role in ("agent", "console"):
            opened.add_metric([role], counts.sessions_total[role])
        yield opened
        stats = r.store_stats()
        entered = stats.entered
        deliveries = CounterMetricFamily(
            "tether_deliveries", "Committed delivery state changes, by the state entered", labels=["state"]
        )
        for state in DeliveryState:
            deliveries.add_metric([state.value], entered.get(state.value, 0))
        yield deliveries
        frames = CounterMetricFamily("tether_frames", "WebSocket frames", labels=["direction"])
        frames.add_metric(["in"], counts.frames_in)
        frames.add_metric(["out"], counts.frames_out)
        yield frames
        pushed = CounterMetricFamily("tether_deliveries_pushed", "Task frames written to agents (re-pushes included)")
        pushed.add_metric([], counts.pushed)
        yield pushed
        shed = CounterMetricFamily(
            "tether_connections_shed",
            "Connections shed at accept: over their address's limit (address) or the limit on all (total)",
            labels=["reason"])
        for reason in ("address", "total"):
            shed.add_metric([reason], counts.shed[reason])
        yield shed
        connections_open = r.connections_open()
        if connections_open is not None:
            connections = GaugeMetricFamily("tether_connections_open", "Connections open, counted from TCP accept")
            connections.add_metric([], connections_open)
            yield connections
        throttled = CounterMetricFamily("tether_sessions_throttled", "Pauses of a session's reading for its frame budget")
        throttled.add_metric([], counts.throttled)
        yield throttled
        untold = CounterMetricFamily("tether_error_replies_dropped", "Error replies to bad frames dropped (peer not reading)")
        untold.add_metric([], counts.untold)
        yield untold
        failures = CounterMetricFamily("tether_credential_failures", "Failed logins and enrollments, by what was "
                                       "presented", labels=["kind"])
        for kind in ("console_token", "agent_token", "enroll_key"):
            failures.add_metric([kind], counts.credential_failures[kind])
        yield failures
        refused = CounterMetricFamily("tether_logins_throttled", "Logins and enrollments refused unread: their "
                                      "address failed too often (4028)")
        refused.add_metric([], counts.logins_throttled)
        yield refused
        states = CounterMetricFamily("tether_state_reports_dropped", "Agents' state reports over their rate limit, "
                                     "counted and not stored")
        states.add_metric([], counts.states_dropped)
        yield states
        commits = CounterMetricFamily("tether_store_commits", "Group commits")
        commits.add_metric([], stats.commits)
        yield commits
        ops = CounterMetricFamily("tether_store_commit_operations", "Operations committed in groups")
        ops.add_metric([], stats.commit_ops)
        yield ops
        seconds = CounterMetricFamily("tether_store_commit_seconds", "Time spent running group commits")
        seconds.add_metric([], stats.commit_seconds)
        yield seconds
        last = GaugeMetricFamily("tether_store_last_commit_seconds", "Duration of the last group commit")
        last.add_metric([], stats.last_commit_seconds)
        yield last
        pending, dropped = r.hook_outbox()
        outbox = GaugeMetricFamily("tether_hook_outbox_pending", "After-hook runs waiting in the outbox")
        outbox.add_metric([], pending)
        yield outbox
        lost = CounterMetricFamily("tether_hook_runs_dropped", "After-hook runs not queued: the outbox was full")
        lost.add_metric([], dropped)
        yield lost
        timers = GaugeMetricFamily("tether_timers_pending", "Entries on the timer wheel")
        timers.add_metric([], r.timers_pending())
        yield timers
        tasks = GaugeMetricFamily(
            "tether_asyncio_tasks",
            f"asyncio tasks alive in tetherd (grows with sessions, not with waits; counted at most every {TASKS_EVERY:g} s)")
        tasks.add_metric([], counts.tasks_alive(TASKS_EVERY, r.clock.monotonic()))
        yield tasks


def render_metrics(readings: Readings) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(readings))
    return generate_latest(registry).decode()
