"""``GET /metrics``: Prometheus text exposition, rendered from live counters on request.

prometheus-client does the text format; the numbers come from the broker and the store
at scrape time, so nothing is updated per frame but plain integer counters.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..protocol.lifecycle import DeliveryState

if TYPE_CHECKING:
    from .broker import Broker
    from .limits import ConnectionLimits


TASKS_EVERY = 1.0
"""Seconds a count of the live asyncio tasks is reused for: counting walks every task (about
30,000 with 10,000 agents online, some 10 ms), and a scrape must not cost in proportion to
the fleet (the benchmarks scrape every 50 ms)."""


class _BrokerCollector(Collector):
    def __init__(self, broker: Broker, limits: ConnectionLimits | None) -> None:
        self.broker = broker
        self.limits = limits

    def collect(self) -> Iterator[Metric]:
        b, limits = self.broker, self.limits
        store = b.store
        sessions = GaugeMetricFamily("tether_sessions_open", "Open sessions by role", labels=["role"])
        sessions.add_metric(["agent"], len(b.sessions))
        sessions.add_metric(["console"], b.consoles)
        yield sessions
        opened = CounterMetricFamily("tether_sessions_opened", "Sessions opened since start", labels=["role"])
        for role in ("agent", "console"):
            opened.add_metric([role], b.stats.sessions_total[role])
        yield opened
        stats = store.stats()
        entered = stats.entered
        deliveries = CounterMetricFamily(
            "tether_deliveries", "Committed delivery state changes, by the state entered", labels=["state"]
        )
        for state in DeliveryState:
            deliveries.add_metric([state.value], entered.get(state.value, 0))
        yield deliveries
        frames = CounterMetricFamily("tether_frames", "WebSocket frames", labels=["direction"])
        frames.add_metric(["in"], b.stats.frames_in)
        frames.add_metric(["out"], b.stats.frames_out)
        yield frames
        pushed = CounterMetricFamily("tether_deliveries_pushed", "Task frames written to agents (re-pushes included)")
        pushed.add_metric([], b.stats.pushed)
        yield pushed
        shed = CounterMetricFamily(
            "tether_connections_shed",
            "Connections shed at accept: over their address's limit (address) or the limit on all (total)",
            labels=["reason"])
        for reason in ("address", "total"):
            shed.add_metric([reason], b.stats.shed[reason])
        yield shed
        if limits is not None:
            connections = GaugeMetricFamily("tether_connections_open", "Connections open, counted from TCP accept")
            connections.add_metric([], limits.total)
            yield connections
        throttled = CounterMetricFamily("tether_sessions_throttled", "Pauses of a session's reading for its frame budget")
        throttled.add_metric([], b.stats.throttled)
        yield throttled
        untold = CounterMetricFamily("tether_error_replies_dropped", "Error replies to bad frames dropped (peer not reading)")
        untold.add_metric([], b.stats.untold)
        yield untold
        failures = CounterMetricFamily("tether_credential_failures", "Failed logins and enrollments, by what was "
                                       "presented", labels=["kind"])
        for kind in ("console_token", "agent_token", "enroll_key"):
            failures.add_metric([kind], b.stats.credential_failures[kind])
        yield failures
        refused = CounterMetricFamily("tether_logins_throttled", "Logins and enrollments refused unread: their "
                                      "address failed too often (4028)")
        refused.add_metric([], b.stats.logins_throttled)
        yield refused
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
        timers = GaugeMetricFamily("tether_timers_pending", "Entries on the timer wheel")
        timers.add_metric([], len(b.wheel))
        yield timers
        tasks = GaugeMetricFamily(
            "tether_asyncio_tasks",
            f"asyncio tasks alive in tetherd (grows with sessions, not with waits; counted at most every {TASKS_EVERY:g} s)")
        tasks.add_metric([], b.stats.tasks_alive(TASKS_EVERY))
        yield tasks


def render_metrics(broker: Broker, limits: ConnectionLimits | None = None) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_BrokerCollector(broker, limits))
    return generate_latest(registry).decode()
