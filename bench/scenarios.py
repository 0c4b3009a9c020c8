"""The scenarios: one function per scenario, one call per repeat, on a fresh tetherd.

``drain``      one agent comes online with a long queue: push-on-connect throughput.
``reconnect``  many agents, a few queued tasks each, all connecting at the same moment.
``idle``       many sessions that do nothing: what an open session costs tetherd.
``storm``      10,000 agents connect at once, one queued task each: sessions served per second.
``ws-*``       the same scenarios against the raw-websockets baseline (:mod:`bench.ws_baseline`)
               instead of tetherd: same clients, same frames, no storage.

Delivery scenarios run until tetherd's ``/metrics`` counter
``tether_deliveries_total{state="done"}`` (state changes *committed* to SQLite) reaches
the number of queued deliveries, polled every :data:`POLL_INTERVAL` seconds. The clock
stops at the last ``committed`` frame an agent received (tetherd sends it once a result
is in its database), as the MQTT scenarios stop at paho's last PUBACK; the poll's own
time is ``metrics_seconds`` (up to one interval later). ``clock`` says which was used:
``client``, or ``metrics`` if some agent did not see all its results confirmed.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from tether.agent.journal import Identity
from tether.protocol.lifecycle import DeliveryState

from .fleet import Fleet
from .seed import echo_tasks, enroll_fleet, queue_tasks
from .tetherd import Tetherd, WsBaseline, connections_shed

POLL_INTERVAL = 0.05
IDLE_SETTLE = 3.0
"""Seconds the idle scenario keeps its sessions open after the last one opened."""
MIB = 1024 * 1024

DONE = 'tether_deliveries_total{state="done"}'
ENDED = tuple(f'tether_deliveries_total{{state="{s}"}}' for s in ("failed", "expired", "cancelled"))
AGENT_SESSIONS = 'tether_sessions_open{role="agent"}'


@dataclass(frozen=True)
class Options:
    agents: int
    per_agent: int
    procs: int
    settings: dict[str, Any]
    """tetherd.toml keys for this run (``--window``, ``--set``); empty: tetherd's defaults."""
    arg_bytes: int
    timeout: float
    """Most seconds the measured phase may take; then the repeat fails."""
    profile: Path | None = None
    """Record tetherd with py-spy during the measured phase (written to this file)."""
    profile_all: bool = False
    """With ``profile``: record the client workers too (py-spy ``--subprocesses`` on the harness)."""
    agent_concurrency: int = 4
    """Commands each simulated agent runs at once (``tether-agent --concurrency``; 4 is its default)."""
    server: str = "tether"
    """``tether`` (a real tetherd) or ``ws`` (the raw-websockets baseline, nothing stored)."""
    minutes: float = 0.0
    """``soak`` only: how long tasks flow."""
    rate: int = 0
    """``soak`` only: tasks created per second."""
    ttl: int = 0
    """``soak`` only: each task's ttl in seconds; 0: tetherd's default (one week)."""
    only: str = ""
    """``hostile`` only: the cases to run, comma-separated (``--only``); empty: all."""


class BenchError(Exception):
    """The run could not be measured; the message says what was seen."""


def percentile(values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def listen_drops() -> dict[str, int]:
    """The kernel's TcpExt ListenOverflows / ListenDrops (machine-wide): a connection that
    found a listening socket's accept queue full; the client retransmits its SYN after
    1 s, 3 s, 7 s ..."""
    try:
        lines = [ln.split() for ln in Path("/proc/net/netstat").read_text().splitlines() if ln.startswith("TcpExt:")]
        fields = dict(zip(lines[0][1:], lines[1][1:], strict=True))
        return {k: int(fields[k]) for k in ("ListenOverflows", "ListenDrops")}
    except (OSError, IndexError, KeyError, ValueError):
        return {}


CONNECT_BUCKETS = (0.1, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)


def histogram(values: list[float]) -> dict[str, int]:
    """How many values fall at or below each of :data:`CONNECT_BUCKETS` seconds (non-cumulative)."""
    counts: dict[str, int] = {}
    lower = 0.0
    for upper in (*CONNECT_BUCKETS, float("inf")):
        n = sum(1 for v in values if lower < v <= upper or (lower == 0.0 and v <= 0.0))
        if n:
            counts[f"<={upper:g}s" if upper != float("inf") else f">{lower:g}s"] = n
        lower = upper
    return counts


def machine_busy_seconds() -> float:
    """CPU seconds every core of the machine spent busy so far (not idle, not iowait)."""
    t = psutil.cpu_times()
    return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000.0, 2)


class _Sampler:
    """tetherd's RSS, sampled on every poll."""

    def __init__(self, tetherd: Tetherd) -> None:
        self.tetherd = tetherd
        self.peak = 0
        self.last = 0

    def sample(self) -> int:
        self.last = self.tetherd.rss()
        self.peak = max(self.peak, self.last)
        return self.last


class _Profiler:
    """``py-spy record`` on tetherd for the measured phase (SIGINT makes it write the file)."""

    def __init__(self, pid: int, path: Path | None, everything: bool = False) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        if path is None:
            return
        exe = shutil.which("py-spy", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
        if exe is None:
            raise BenchError("--py-spy: py-spy is not installed (pip install py-spy)")
        fmt = "raw" if path.suffix in (".txt", ".raw") else "speedscope" if path.suffix == ".json" else "flamegraph"
        self.path = path
        target = ["--pid", str(os.getpid()), "--subprocesses"] if everything else ["--pid", str(pid)]
        self.proc = subprocess.Popen(
            [exe, "record", *target, "--output", str(path), "--format", fmt, "--rate", "250",
             "--threads", "--nonblocking"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate(timeout=10)
        if self.proc.returncode not in (0, -signal.SIGINT):
            print(f"py-spy exited {self.proc.returncode}: {err.decode(errors='replace')[-500:]}")
        self.proc = None


def _fleet_figures(results: list[dict[str, Any]], go: float) -> dict[str, Any]:
    """Client-side latencies and counts from every worker's probes."""
    connect: list[float] = []
    first_task: list[float] = []
    first_exec: list[float] = []
    served_at: list[float] = []
    sessions = 0
    problems: dict[str, int] = {}
    for r in results:
        for opened, task_at, exec_at in zip(r["opened"], r["first_task"], r["first_exec"], strict=True):
            sessions += len(opened)
            if opened:
                connect.append(opened[0] - r["go"])
                if task_at is not None:
                    first_task.append(task_at - opened[0])
                    served_at.append(task_at)
                if exec_at is not None:
                    first_exec.append(exec_at - opened[0])
        for name, count in r["problems"].items():
            problems[name] = problems.get(name, 0) + count
    skew = max(r["go"] for r in results) - go
    return {
        "connect_p50_ms": _ms(percentile(connect, 50)),
        "connect_p99_ms": _ms(percentile(connect, 99)),
        "connect_max_ms": _ms(max(connect, default=None)),
        "first_task_p50_ms": _ms(percentile(first_task, 50)),
        "first_task_p99_ms": _ms(percentile(first_task, 99)),
        "first_task_max_ms": _ms(max(first_task, default=None)),
        "first_exec_p50_ms": _ms(percentile(first_exec, 50)),
        "first_exec_p99_ms": _ms(percentile(first_exec, 99)),
        "sessions_opened": sessions,
        "agents_connected": len(connect),
        "agents_served": len(served_at),
        "all_served_s": round(max(served_at) - go, 3) if served_at else None,
        "executed": sum(r["executed"] for r in results),
        "failed_client_side": sum(r["failed"] for r in results),
        "duplicates_received": sum(r["duplicates"] for r in results),
        "fatal": sum(len(r["fatal"]) for r in results),
        "crashed": sum(len(r["crashed"]) for r in results),
        "not_stopped": sum(r["not_stopped"] for r in results),
        "start_skew_ms": _ms(skew),
        "connect_histogram": histogram(connect),
        "client_problems": problems,
    }


def _server(opts: Options, per_agent: int) -> Tetherd:
    """A fresh tetherd, or the baseline server configured to push ``per_agent`` tasks."""
    if opts.server == "ws":
        return WsBaseline(per_agent, opts.arg_bytes, int(opts.settings.get("window", 10)))
    return Tetherd(opts.settings)


def _setup(tetherd: Tetherd, opts: Options, per_agent: int) -> tuple[list[Any], dict[str, Any]]:
    run_id = uuid.uuid4().hex[:8]
    if isinstance(tetherd, WsBaseline):  # nothing to enroll or queue: the server makes tasks up
        return [Identity(tetherd.url, f"ws-{run_id}-{i:06d}", "baseline", f"ws-{run_id}-{i:06d}", [])
                for i in range(opts.agents)], {}
    t = time.monotonic()
    identities = asyncio.run(enroll_fleet(tetherd.url, tetherd.enroll_key, opts.agents, run_id=run_id))
    enrolled = time.monotonic()
    tasks = echo_tasks(identities, per_agent, opts.arg_bytes)
    created = asyncio.run(queue_tasks(tetherd.url, tetherd.admin_token, tasks)) if tasks else []
    queued = time.monotonic()
    if sum(c["deliveries"] for c in created) != len(tasks):
        raise BenchError(f"queued {len(tasks)} tasks but tetherd created {sum(c['deliveries'] for c in created)} deliveries")
    return identities, {
        "enroll_s": round(enrolled - t, 3),
        "queue_s": round(queued - enrolled, 3),
        "queue_tasks_per_s": round(len(tasks) / (queued - enrolled), 1) if tasks else None,
    }


def run_delivery(opts: Options) -> dict[str, Any]:
    """drain / reconnect: every queued delivery done, as committed in tetherd."""
    total = opts.agents * opts.per_agent
    with _server(opts, opts.per_agent) as tetherd:
        identities, setup = _setup(tetherd, opts, opts.per_agent)
        sampler = _Sampler(tetherd)
        rss_before = sampler.sample()
        sampler.peak = 0
        m0 = tetherd.metrics()
        fleet = Fleet(identities, opts.procs, max_seconds=opts.timeout + 60, concurrency=opts.agent_concurrency)
        fleet.start()
        try:
            drops0 = listen_drops()
            load = os.getloadavg()[0]
            busy0 = machine_busy_seconds()
            cpu0 = tetherd.cpu_seconds()
            go = fleet.go()
            profiler = _Profiler(tetherd.pid, opts.profile, opts.profile_all)
            try:
                watch = _Watch(tetherd, fleet, sampler)
                end, m1 = watch.until(go, go + opts.timeout,
                                      lambda m: m.get(DONE, 0) + sum(m.get(k, 0) for k in ENDED) >= total,
                                      lambda m: f"done={m.get(DONE, 0):.0f}/{total}")
            finally:
                profiler.stop()
            cpu1 = tetherd.cpu_seconds()
            busy1 = machine_busy_seconds()
            drops1 = listen_drops()
            rss_end = sampler.sample()
            results = fleet.finish()
        finally:
            fleet.close()
        log_problems = tetherd.log_levels()
        exit_code = tetherd.stop()
    # The clock: the last agent's last ``committed`` (the module docstring says why).
    metrics_seconds = end - go
    counts = [n for r in results for n in r["committed"]]
    ends = [at for r in results for n, at in zip(r["committed"], r["committed_at"], strict=True)
            if n >= opts.per_agent and at is not None]
    clock = "client" if counts and len(ends) == len(counts) else "metrics"
    seconds = max(ends) - go if clock == "client" else metrics_seconds
    done = m1.get(DONE, 0)

    def grew(key: str) -> float:
        """How much a ``/metrics`` counter grew over the measured phase."""
        return m1.get(key, 0) - m0.get(key, 0)

    commits = grew("tether_store_commits_total")
    ops = grew("tether_store_commit_operations_total")
    commit_s = grew("tether_store_commit_seconds_total")
    figures = {
        "deliveries_per_s": round(done / seconds, 1),
        "seconds": round(seconds, 3),
        "clock": clock,
        "metrics_seconds": round(metrics_seconds, 3),
        "deliveries_done": int(done),
        "deliveries_not_done": int(sum(m1.get(k, 0) for k in ENDED)),
        **_fleet_figures(results, go),
        "tetherd_rss_before_mib": round(rss_before / MIB, 1),
        "tetherd_rss_peak_mib": round(sampler.peak / MIB, 1),
        "tetherd_rss_end_mib": round(rss_end / MIB, 1),
        "tetherd_cpu_percent": round(100.0 * (cpu1 - cpu0) / metrics_seconds, 1),
        # The server's own cost, whatever else shares the machine (the clients run here too).
        "server_cpu_us_per_delivery": round(1e6 * (cpu1 - cpu0) / done, 1) if done else None,
        "agents_cpu_percent": round(100.0 * sum(r["cpu_seconds"] for r in results) / metrics_seconds, 1),
        "others_cpu_percent": round(100.0 * ((busy1 - busy0) - (cpu1 - cpu0)
                                             - sum(r["cpu_seconds"] for r in results)) / metrics_seconds, 1),
        "loadavg_1m_before": round(load, 2),
        # Every state a delivery enters: their committed changes, summed, are the store's state writes.
        "state_changes_per_delivery": round(sum(
            grew(f'tether_deliveries_total{{state="{st}"}}') for st in DeliveryState) / total, 2) if total else None,
        "sent_marks": int(grew('tether_deliveries_total{state="sent"}')),
        "group_commits": int(commits),
        "ops_per_commit": round(ops / commits, 1) if commits else None,
        "commit_busy_percent": round(100.0 * commit_s / metrics_seconds, 1),
        "frames_in": int(grew('tether_frames_total{direction="in"}')),
        "frames_out": int(grew('tether_frames_total{direction="out"}')),
        # The per-session limits (README "Limits on one peer") must not slow a benchmark:
        "sessions_throttled": int(grew("tether_sessions_throttled_total")),
        "connections_shed": int(connections_shed(m1) - connections_shed(m0)),
        **watch.figures(),
        "listen_overflows": {k: drops1[k] - drops0[k] for k in drops1 if k in drops0},
        **setup,
        "tetherd_log_problems": log_problems,
        "tetherd_exit_code": exit_code,
        "monotonic": {"go": go, "end": end},
    }
    return figures


def run_idle(opts: Options) -> dict[str, Any]:
    """idle: open ``agents`` sessions, keep them a few seconds; tetherd RSS per session."""
    with _server(opts, 0) as tetherd:
        identities, setup = _setup(tetherd, opts, 0)
        sampler = _Sampler(tetherd)
        rss_before = sampler.sample()
        fleet = Fleet(identities, opts.procs, max_seconds=opts.timeout + 60, concurrency=opts.agent_concurrency)
        fleet.start()
        try:
            drops0 = listen_drops()
            go = fleet.go()
            watch = _Watch(tetherd, fleet, sampler)
            end, _ = watch.until(go, go + opts.timeout,
                                 lambda m: m.get(AGENT_SESSIONS, 0) >= opts.agents,
                                 lambda m: f"open sessions={m.get(AGENT_SESSIONS, 0):.0f}/{opts.agents}")
            settle_until = time.monotonic() + IDLE_SETTLE
            while time.monotonic() < settle_until:
                sampler.sample()
                time.sleep(POLL_INTERVAL)
            rss_open = sampler.sample()
            drops1 = listen_drops()
            m1 = tetherd.metrics()
            results = fleet.finish()
        finally:
            fleet.close()
        log_problems = tetherd.log_levels()
        exit_code = tetherd.stop()
    client = _fleet_figures(results, go)
    return {
        "sessions_open": int(m1.get(AGENT_SESSIONS, 0)),
        "all_open_s": round(end - go, 3),
        "tetherd_rss_before_mib": round(rss_before / MIB, 1),
        "tetherd_rss_open_mib": round(rss_open / MIB, 1),
        "tetherd_rss_peak_mib": round(sampler.peak / MIB, 1),
        "rss_per_session_kib": round((rss_open - rss_before) / max(1, opts.agents) / 1024, 1),
        **{k: client[k] for k in ("connect_p50_ms", "connect_p99_ms", "connect_max_ms", "sessions_opened",
                                  "fatal", "crashed", "connect_histogram", "client_problems")},
        **watch.figures(),
        "listen_overflows": {k: drops1[k] - drops0[k] for k in drops1 if k in drops0},
        **setup,
        "tetherd_log_problems": log_problems,
        "tetherd_exit_code": exit_code,
    }


class _Watch:
    """Poll /metrics (and RSS) until a condition holds; bounded by a deadline.

    A scrape that fails or times out (tetherd busy, or its accept queue full during a
    connection storm) is counted and retried; ``max_gap`` is the longest time between
    two successful scrapes, i.e. the resolution of the figure.
    """

    def __init__(self, tetherd: Tetherd, fleet: Fleet, sampler: _Sampler) -> None:
        self.tetherd, self.fleet, self.sampler = tetherd, fleet, sampler
        self.failed_scrapes = 0
        self.max_gap = 0.0

    def until(self, start: float, deadline: float, reached: Any, describe: Any) -> tuple[float, dict[str, float]]:
        last_ok = start
        m: dict[str, float] = {}
        while True:
            try:
                m = self.tetherd.metrics()
            except OSError:  # URLError, timeouts, resets
                self.failed_scrapes += 1
            else:
                now = time.monotonic()
                self.max_gap = max(self.max_gap, now - last_ok)
                last_ok = now
                if reached(m):
                    self.sampler.sample()
                    return now, m
            self.sampler.sample()
            if not self.tetherd.alive():
                raise BenchError(f"tetherd exited ({describe(m)}):\n{self.tetherd.log_tail()}")
            if not self.fleet.alive():
                raise BenchError(f"a fleet worker died ({describe(m)})")
            if time.monotonic() > deadline:
                raise BenchError(f"not finished within the deadline ({describe(m)}); tetherd log tail:\n"
                                 f"{self.tetherd.log_tail(10)}")
            time.sleep(POLL_INTERVAL)

    def figures(self) -> dict[str, Any]:
        return {"metrics_failed_scrapes": self.failed_scrapes, "metrics_max_gap_s": round(self.max_gap, 3)}


def run_storm(opts: Options) -> dict[str, Any]:
    """storm: every agent connects at once with one queued task; the clock stops when the
    last agent has received its first task (client side: journaled, its ack queued)."""
    figures = run_delivery(opts)
    served = figures["agents_served"]
    problems = (figures["fatal"] + figures["crashed"] + figures["failed_client_side"] + figures["not_stopped"]
                + sum(figures["client_problems"].values()) + sum(figures["tetherd_log_problems"].values())
                + (opts.agents - served) + figures["duplicates_received"])
    seconds = figures["all_served_s"]
    return {
        "sessions_per_s": round(opts.agents / seconds, 1) if seconds and served == opts.agents else 0.0,
        "all_served_s": seconds,
        "errors": problems,
        **{k: v for k, v in figures.items() if k != "all_served_s"},
    }


def _with_server(run: Any, server: str) -> Any:
    def run_on(opts: Options) -> dict[str, Any]:
        return run(Options(**{**opts.__dict__, "server": server}))

    run_on.__doc__ = run.__doc__
    return run_on


SCENARIOS: dict[str, dict[str, Any]] = {
    "drain": {"run": run_delivery, "agents": 1, "per_agent": 20_000, "procs": 1, "arg_bytes": 200,
              "what": "1 agent comes online with its queue: push-on-connect drain rate"},
    "drain-c32": {"run": run_delivery, "agents": 1, "per_agent": 20_000, "procs": 1, "arg_bytes": 200,
                  "agent_concurrency": 32,
                  "what": "drain with the agent running up to 32 commands at once (tether-agent --concurrency 32, "
                          "as many as tetherd's window has in flight)"},
    "reconnect": {"run": run_delivery, "agents": 1000, "per_agent": 20, "procs": 2, "arg_bytes": 0,
                  "what": "every agent connects at the same moment, each with a few queued tasks"},
    "reconnect-c32": {"run": run_delivery, "agents": 1000, "per_agent": 20, "procs": 2, "arg_bytes": 0,
                      "agent_concurrency": 32,
                      "what": "reconnect with each agent running up to 32 commands at once (tether-agent --concurrency 32)"},
    "storm": {"run": run_storm, "agents": 10_000, "per_agent": 1, "procs": 2, "arg_bytes": 0,
              "what": "10,000 agents connect at once, one queued task each: all served, sessions/s"},
    "idle": {"run": run_idle, "agents": 10_000, "per_agent": 0, "procs": 2, "arg_bytes": 0,
             "what": "open sessions doing nothing: tetherd memory per session"},
}
for _name in ("drain", "reconnect", "storm", "idle"):
    SCENARIOS[f"ws-{_name}"] = {**SCENARIOS[_name], "run": _with_server(SCENARIOS[_name]["run"], "ws"),
                                "what": "raw-websockets baseline (no storage): " + SCENARIOS[_name]["what"]}
HEADLINES: dict[str, tuple[str, ...]] = {
    "drain": ("deliveries_per_s", "seconds", "server_cpu_us_per_delivery", "tetherd_rss_peak_mib"),
    "drain-c32": ("deliveries_per_s", "seconds", "server_cpu_us_per_delivery", "tetherd_rss_peak_mib"),
    "reconnect": ("deliveries_per_s", "seconds", "first_task_p99_ms", "server_cpu_us_per_delivery",
                  "tetherd_rss_peak_mib"),
    "reconnect-c32": ("deliveries_per_s", "seconds", "first_task_p99_ms", "server_cpu_us_per_delivery",
                      "tetherd_rss_peak_mib"),
    "storm": ("sessions_per_s", "all_served_s", "errors", "tetherd_rss_peak_mib"),
    "idle": ("rss_per_session_kib", "all_open_s", "tetherd_rss_open_mib"),
}
