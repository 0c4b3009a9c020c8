"""``soak``: tasks flowing for minutes through a real tetherd while agents drop and come back.

One fresh tetherd with default settings. ``--agents`` (1,000) agents are enrolled in tag
groups of :data:`GROUP_SIZE` (tags ``soak-g0``, ``soak-g1`` ...) and brought online: the
real ``AgentClient`` fleet in ``--procs`` (4) worker processes, every agent behind its own
relay port in its worker (:mod:`bench.churn`). Once every session is open and
:data:`SETTLE` seconds have passed, tetherd's RSS is the **start** figure. Then, for
``--minutes``:

* a **producer** process (:func:`_produce`) creates ``--rate`` (200) ``echo`` tasks a
  second through one console session, on a fixed schedule (task *i* is due at
  ``t0 + i / rate``; at most :data:`IN_FLIGHT` unanswered): every ``rate * ALL_EVERY``-th
  task targets ``all``, of the others :data:`TAG_SHARE` target a random group's tag and
  the rest a single random agent (``random.Random(SEED)``); with ``--ttl`` each task
  carries that ttl (else tetherd's default, one week);
* the **relays cut** connections: every :data:`CHURN` ``.every`` seconds each worker resets
  (RST both ways) the connections of ~1 % of its agents, drawn from its seeded 20 %
  "flaky" agents; they reconnect by the client's own backoff;
* the harness samples tetherd's RSS every :data:`TICK` second (the peak) and records a
  point every :data:`SAMPLE_EVERY` seconds (RSS, committed deliveries, open sessions, timer
  wheel, asyncio tasks, tetherd CPU), printing one every :data:`PRINT_EVERY` seconds.

When the duration is up the producer stops by itself, the cuts stop, and the harness waits
at most :data:`DRAIN_TIMEOUT` seconds for every created delivery to be committed ``done``;
:data:`SETTLE` seconds later tetherd's RSS is the **end** figure.

Verdict (``verdict`` PASS / FAIL, printed; ``python -m bench soak`` exits 1 on FAIL):

* **memory**: end RSS <= start RSS x :data:`RSS_FACTOR` + :data:`RSS_SLACK_MIB` MiB;
* **errors = 0**: refused or unanswered creates, error frames and other warnings the
  clients logged, fatal/crashed clients, runs failed on the client, warning lines in
  tetherd's log, deliveries failed/expired/cancelled, deliveries not done at the end
  (``/metrics``, ``task.list state=pending`` and the database file read after tetherd
  stopped), runs not exactly once (client-side ``executed`` != deliveries created), relay
  connections tetherd refused, connections tetherd shed for its per-address limit (4029).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import multiprocessing
import queue
import random
import resource
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

import psutil

from tether.console import ConsoleClient, ConsoleError, DaemonError

from .churn import Churn
from .fleet import Fleet
from .scenarios import (
    AGENT_SESSIONS,
    DONE,
    ENDED,
    MIB,
    BenchError,
    Options,
    _fleet_figures,
    _ms,
    _Sampler,
    _Watch,
    machine_busy_seconds,
    percentile,
)
from .seed import enroll_fleet, tagged_key
from .tetherd import Tetherd, connections_shed

SEED = 6
"""Seeds the producer's targets and the relays' choice of agents to cut (issue 6)."""
GROUP_SIZE = 50
TAG_SHARE = 0.05
"""Share of the tasks (besides the ``all`` ones) that target a group's tag."""
ALL_EVERY = 30.0
"""Seconds of tasks between two ``all`` tasks (one every ``rate * ALL_EVERY`` tasks)."""
IN_FLIGHT = 100
"""Most ``task.create`` calls the producer has unanswered; past that it falls behind its
schedule (``producer_lag_max_s`` says by how much)."""
ANSWER_TIMEOUT = 60.0
CHURN = Churn(seed=SEED, every=3.0, flaky_share=0.2, cut_share=0.01)
SETTLE = 3.0
"""Seconds between the last session opening (or the drain ending) and the RSS figure."""
TICK = 1.0
SAMPLE_EVERY = 5.0
PRINT_EVERY = 30.0
DRAIN_TIMEOUT = 60.0
PRODUCER_START_TIMEOUT = 60.0
RSS_FACTOR = 1.5
RSS_SLACK_MIB = 32.0
PENDING_LIST_LIMIT = 1000
OPENED = 'tether_sessions_opened_total{role="agent"}'
QUEUED = 'tether_deliveries_total{state="queued"}'


# -- the producer (its own process) ---------------------------------------------------------


async def _producer(url: str, token: str, agent_ids: list[str], tags: list[str], rate: int, seconds: float,
                    seed: int, ttl: int, out: Any) -> dict[str, Any]:
    rng = random.Random(seed)
    cpu_start = _own_cpu()
    all_every = max(1, round(rate * ALL_EVERY))
    kinds: collections.Counter[str] = collections.Counter()
    deliveries: collections.Counter[str] = collections.Counter()
    errors: collections.Counter[str] = collections.Counter()
    samples: list[str] = []
    latencies: list[float] = []
    sent_at: list[float] = []
    lag_max = 0.0
    gate = asyncio.Semaphore(IN_FLIGHT)
    async with ConsoleClient(url, token) as console:

        async def one(kind: str, params: dict[str, Any]) -> None:
            t = time.monotonic()
            try:
                created = await console.call("task.create", params)
            except (ConsoleError, DaemonError) as exc:
                errors[type(exc).__name__] += 1
                if len(samples) < 5:
                    samples.append(f"{kind}: {exc}")
            else:
                latencies.append(time.monotonic() - t)
                sent_at.append(t)
                kinds[kind] += 1
                deliveries[kind] += int(created["deliveries"])
            finally:
                gate.release()

        inflight: set[asyncio.Task[None]] = set()
        t0 = time.monotonic()
        out.put(("started", t0))
        scheduled = int(rate * seconds)
        issued = 0
        for i in range(scheduled):
            if time.monotonic() >= t0 + seconds:
                break  # behind schedule (tetherd slower than the rate): the duration still ends the run
            due = t0 + i / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await gate.acquire()
            lag_max = max(lag_max, time.monotonic() - due)
            if i % all_every == all_every - 1:
                kind, target = "all", {"all": True}
            elif rng.random() < TAG_SHARE:
                kind, target = "tag", {"tag": rng.choice(tags)}
            else:
                kind, target = "agent", {"agent": rng.choice(agent_ids)}
            params = {"command": "echo", "args": {"n": i}, **target, **({"ttl": ttl} if ttl else {})}
            task = asyncio.create_task(one(kind, params))
            inflight.add(task)
            task.add_done_callback(inflight.discard)
            issued += 1
        issued_at = time.monotonic()
        if inflight:
            await asyncio.wait(set(inflight), timeout=ANSWER_TIMEOUT)
        if inflight:
            errors["unanswered"] += len(inflight)
            for task in list(inflight):
                task.cancel()
        answered = time.monotonic()
    minutes: dict[int, list[float]] = collections.defaultdict(list)
    for t, latency in zip(sent_at, latencies, strict=True):
        minutes[int((t - t0) // 60)].append(latency)
    return {
        "t0": t0,
        "issued_at": issued_at,
        "scheduled": scheduled,
        "not_issued": scheduled - issued,
        "answered_at": answered,
        "tasks": sum(kinds.values()),
        "tasks_by_target": dict(kinds),
        "deliveries": sum(deliveries.values()),
        "deliveries_by_target": dict(deliveries),
        "errors": sum(errors.values()),
        "error_kinds": dict(errors),
        "error_samples": samples,
        "lag_max_s": lag_max,
        "cpu_seconds": _own_cpu() - cpu_start,
        "latency_p50": percentile(latencies, 50),
        "latency_p99": percentile(latencies, 99),
        "latency_max": max(latencies, default=None),
        "latency_by_minute": [{"minute": m, "creates": len(v), "p50_ms": _ms(percentile(v, 50)),
                               "p99_ms": _ms(percentile(v, 99)), "max_ms": _ms(max(v))}
                              for m, v in sorted(minutes.items())],
    }


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _produce(url: str, token: str, agent_ids: list[str], tags: list[str], rate: int, seconds: float,
             seed: int, ttl: int, out: Any) -> None:
    """Process target: create tasks for ``seconds``, then put ``("result", dict)`` on ``out``."""
    async def bounded() -> dict[str, Any]:
        async with asyncio.timeout(seconds + ANSWER_TIMEOUT + 60):
            return await _producer(url, token, agent_ids, tags, rate, seconds, seed, ttl, out)

    try:
        import uvloop
    except ImportError:
        result = asyncio.run(bounded())
    else:
        result = uvloop.run(bounded())
    out.put(("result", result))


# -- the harness ------------------------------------------------------------------------------


def _groups(agents: int) -> list[int]:
    """Sizes of the tag groups: ``ceil(agents / GROUP_SIZE)`` groups, as even as can be."""
    n = max(1, math.ceil(agents / GROUP_SIZE))
    return [agents // n + (g < agents % n) for g in range(n)]


async def _enroll(tetherd: Tetherd, sizes: list[int], run_id: str) -> list[Any]:
    identities: list[Any] = []
    for g, size in enumerate(sizes):
        key = await tagged_key(tetherd.url, tetherd.admin_token, [f"soak-g{g}"])
        identities += await enroll_fleet(tetherd.url, key, size, run_id=f"{run_id}-g{g}")
    return identities


async def _pending(url: str, token: str) -> int:
    async with ConsoleClient(url, token) as console:
        return len(await console.call("task.list", {"state": "pending", "limit": PENDING_LIST_LIMIT}))


def _database_states(path: Path) -> dict[str, int]:
    """Deliveries by state, read from tetherd's file once it has stopped."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        return {state: n for state, n in db.execute("SELECT state, count(*) FROM deliveries GROUP BY state")}


def _cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system
    return total


def _slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, MiB), in MiB a minute."""
    if len(points) < 2:
        return None
    n = len(points)
    mx = sum(p[0] for p in points) / n
    my = sum(p[1] for p in points) / n
    var = sum((p[0] - mx) ** 2 for p in points)
    return None if var == 0 else 60.0 * sum((p[0] - mx) * (p[1] - my) for p in points) / var


class _Recorder:
    """tetherd's RSS every tick (the peak), a point of the series every SAMPLE_EVERY s."""

    def __init__(self, tetherd: Tetherd, sampler: _Sampler, t0: float) -> None:
        self.tetherd, self.sampler, self.t0 = tetherd, sampler, t0
        self.series: list[dict[str, Any]] = []
        self.failed_scrapes = 0
        self.next_point = t0
        self.next_print = t0 + PRINT_EVERY
        self.cpu_at = (t0, tetherd.cpu_seconds())
        self.last: dict[str, float] = {}

    def tick(self, phase: str) -> None:
        rss = self.sampler.sample()
        now = time.monotonic()
        if now < self.next_point:
            return
        self.next_point += SAMPLE_EVERY * max(1, math.ceil((now - self.next_point) / SAMPLE_EVERY + 1e-9))
        try:
            m = self.tetherd.metrics()
        except OSError:
            self.failed_scrapes += 1
            return
        self.last = m
        cpu = self.tetherd.cpu_seconds()
        cpu_percent = 100.0 * (cpu - self.cpu_at[1]) / max(1e-9, now - self.cpu_at[0])
        self.cpu_at = (now, cpu)
        point = {
            "t": round(now - self.t0, 1),
            "phase": phase,
            "rss_mib": round(rss / MIB, 1),
            "done": int(m.get(DONE, 0)),
            "queued": int(m.get(QUEUED, 0)),
            "sessions": int(m.get(AGENT_SESSIONS, 0)),
            "sessions_opened": int(m.get(OPENED, 0)),
            "timers": int(m.get("tether_timers_pending", 0)),
            "asyncio_tasks": int(m.get("tether_asyncio_tasks", 0)),
            "tetherd_cpu_percent": round(cpu_percent, 1),
        }
        self.series.append(point)
        if now >= self.next_print:
            self.next_print += PRINT_EVERY
            print(f"    t={point['t']:6.0f}s {phase:5s} rss={point['rss_mib']:6.1f} MiB "
                  f"(peak {self.sampler.peak / MIB:.1f}) done={point['done']:,} sessions={point['sessions']} "
                  f"opened={point['sessions_opened']:,} timers={point['timers']:,} "
                  f"tasks={point['asyncio_tasks']} cpu={point['tetherd_cpu_percent']:.0f}%", flush=True)


def run_soak(opts: Options) -> dict[str, Any]:
    seconds = opts.minutes * 60.0
    if opts.rate < 1 or seconds <= 0:
        raise BenchError("soak needs --minutes > 0 and --rate >= 1")
    run_id = uuid.uuid4().hex[:8]
    sizes = _groups(opts.agents)
    tags = [f"soak-g{g}" for g in range(len(sizes))]
    ctx = multiprocessing.get_context("spawn")
    with Tetherd(opts.settings) as tetherd:
        t = time.monotonic()
        identities = asyncio.run(_enroll(tetherd, sizes, run_id))
        enroll_s = time.monotonic() - t
        sampler = _Sampler(tetherd)
        rss_enrolled = sampler.sample()
        fleet = Fleet(identities, opts.procs, max_seconds=seconds + opts.timeout + DRAIN_TIMEOUT + 180,
                      churn=CHURN)
        fleet.start()
        out = ctx.Queue()
        producer = None
        try:
            go = fleet.go()
            watch = _Watch(tetherd, fleet, sampler)
            opened, _ = watch.until(go, go + opts.timeout, lambda m: m.get(AGENT_SESSIONS, 0) >= opts.agents,
                                    lambda m: f"open sessions={m.get(AGENT_SESSIONS, 0):.0f}/{opts.agents}")
            time.sleep(SETTLE)
            rss_start = sampler.sample()
            sampler.peak = rss_start
            m0 = tetherd.metrics()
            producer = ctx.Process(target=_produce, name="bench-soak-producer", daemon=True,
                                   args=(tetherd.url, tetherd.admin_token, [i.agent_id for i in identities], tags,
                                         opts.rate, seconds, SEED, opts.ttl, out))
            producer.start()
            try:
                kind, t0 = out.get(timeout=PRODUCER_START_TIMEOUT)
            except queue.Empty:
                raise BenchError(f"the producer did not start within {PRODUCER_START_TIMEOUT:g} s") from None
            assert kind == "started"
            fleet.start_churn()
            pids = fleet.pids
            cpu0 = (tetherd.cpu_seconds(), _cpu(pids), machine_busy_seconds())
            print(f"  soak: {opts.agents} sessions open after {opened - go:.1f} s, tetherd RSS "
                  f"{rss_start / MIB:.1f} MiB; tasks flowing for {seconds:g} s", flush=True)
            rec = _Recorder(tetherd, sampler, t0)
            rec.tick("run")
            produced: dict[str, Any] | None = None
            while produced is None:
                try:
                    kind, value = out.get(timeout=TICK)
                except queue.Empty:
                    pass
                else:
                    if kind == "result":
                        produced = value
                        break
                rec.tick("run")
                if not tetherd.alive():
                    raise BenchError(f"tetherd exited during the soak:\n{tetherd.log_tail()}")
                if not fleet.alive():
                    raise BenchError("a fleet worker died during the soak")
                if not producer.is_alive() and out.empty():
                    raise BenchError(f"the producer exited ({producer.exitcode}) without its results")
                if time.monotonic() > t0 + seconds + ANSWER_TIMEOUT + 90:
                    raise BenchError("the producer did not finish in time")
            fleet.stop_churn()
            stopped = time.monotonic()
            m_run = tetherd.metrics()
            target = produced["deliveries"]
            drained_at: float | None = None
            m1 = m_run
            while time.monotonic() < stopped + DRAIN_TIMEOUT:
                try:
                    m1 = tetherd.metrics()
                except OSError:
                    rec.failed_scrapes += 1
                else:
                    if m1.get(DONE, 0) + sum(m1.get(k, 0) for k in ENDED) >= target:
                        drained_at = time.monotonic()
                        break
                rec.tick("drain")
                time.sleep(0.2)
            settle_until = time.monotonic() + SETTLE
            while time.monotonic() < settle_until:
                rec.tick("end")
                time.sleep(min(TICK, max(0.0, settle_until - time.monotonic())))
            rss_end = sampler.sample()
            rec.next_point = time.monotonic()
            rec.tick("end")
            m_end = tetherd.metrics()
            cpu1 = (tetherd.cpu_seconds(), _cpu(pids), machine_busy_seconds())
            ended = time.monotonic()
            pending = asyncio.run(_pending(tetherd.url, tetherd.admin_token))
            results = fleet.finish()
        finally:
            fleet.close()
            if producer is not None:  # it has ended by itself unless the run failed
                producer.join(timeout=10)
                if producer.is_alive():
                    producer.terminate()
                    producer.join(timeout=10)
                if producer.is_alive():
                    producer.kill()
                    producer.join(timeout=10)
        log_problems = tetherd.log_levels()
        exit_code = tetherd.stop()
        db_states = _database_states(tetherd.data_dir / "tether.sqlite")
        db_bytes = sum(p.stat().st_size for p in tetherd.data_dir.glob("tether.sqlite*"))
    return _figures(opts, seconds, produced, results, go, {
        "t0": t0, "stopped": stopped, "drained_at": drained_at, "ended": ended, "cpu0": cpu0, "cpu1": cpu1,
        "m0": m0, "m_run": m_run, "m_end": m_end, "rss_enrolled": rss_enrolled, "rss_start": rss_start,
        "rss_end": rss_end, "peak": sampler.peak, "series": rec.series, "failed_scrapes": rec.failed_scrapes,
        "pending": pending, "log_problems": log_problems, "exit_code": exit_code, "db_states": db_states,
        "db_bytes": db_bytes, "enroll_s": enroll_s, "connect_s": opened - go, "target": target,
        "groups": sizes,
    })


def _figures(opts: Options, seconds: float, produced: dict[str, Any], results: list[dict[str, Any]], go: float,
             r: dict[str, Any]) -> dict[str, Any]:
    client = _fleet_figures(results, go)
    created = int(produced["deliveries"])
    m0, m_run, m_end = r["m0"], r["m_run"], r["m_end"]
    done_metrics = int(m_end.get(DONE, 0) - m0.get(DONE, 0))
    db_done = int(r["db_states"].get("done", 0))
    db_total = sum(r["db_states"].values())
    ended = int(sum(m_end.get(k, 0) for k in ENDED))
    run_s = r["stopped"] - r["t0"]
    whole = r["ended"] - r["t0"]
    cpu0, cpu1 = r["cpu0"], r["cpu1"]
    tetherd_cpu, agents_cpu = cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]
    producer_cpu = float(produced["cpu_seconds"])  # it has exited by the end: its own count
    busy = cpu1[2] - cpu0[2]
    rss_start, rss_end, peak = r["rss_start"], r["rss_end"], r["peak"]
    bound = rss_start * RSS_FACTOR + RSS_SLACK_MIB * MIB
    memory_ok = rss_end <= bound
    late = [(p["t"], p["rss_mib"]) for p in r["series"] if p["phase"] == "run" and p["t"] >= seconds / 2]
    errors = {
        "create_errors": int(produced["errors"]),
        "client_warnings": sum(client["client_problems"].values()),
        "client_fatal": client["fatal"],
        "client_crashed": client["crashed"],
        "client_not_stopped": client["not_stopped"],
        "runs_failed_client_side": client["failed_client_side"],
        "tetherd_log_warnings": sum(r["log_problems"].values()),
        "deliveries_failed_expired_cancelled": ended,
        "deliveries_not_done": max(0, created - min(done_metrics, db_done)),
        "deliveries_unaccounted_in_database": abs(db_total - created),
        "pending_at_end": int(r["pending"]),
        "runs_not_exactly_once": abs(client["executed"] - created),
        "relay_upstream_failures": sum(x.get("relay_upstream_failures", 0) for x in results),
        "connections_shed": int(connections_shed(m_end) - connections_shed(m0)),
    }
    total_errors = sum(errors.values())
    verdict = "PASS" if memory_ok and total_errors == 0 else "FAIL"
    cuts = sum(x.get("cuts", 0) for x in results)
    reconnects = client["sessions_opened"] - client["agents_connected"]
    figures = {
        "verdict": verdict,
        "errors": total_errors,
        "memory": "PASS" if memory_ok else "FAIL",
        "rss_start_mib": round(rss_start / MIB, 1),
        "rss_end_mib": round(rss_end / MIB, 1),
        "rss_peak_mib": round(peak / MIB, 1),
        "rss_bound_mib": round(bound / MIB, 1),
        "rss_bound": f"end <= start x {RSS_FACTOR:g} + {RSS_SLACK_MIB:g} MiB",
        "rss_growth_mib": round((rss_end - rss_start) / MIB, 1),
        "rss_second_half_growth_mib": round(late[-1][1] - late[0][1], 1) if len(late) >= 2 else None,
        "rss_second_half_slope_mib_per_min": None if (s := _slope(late)) is None else round(s, 3),
        "rss_enrolled_offline_mib": round(r["rss_enrolled"] / MIB, 1),
        "minutes": opts.minutes,
        "rate_asked": opts.rate,
        "task_ttl_s": opts.ttl or None,
        "tasks_created": int(produced["tasks"]),
        "tasks_per_s": round(produced["tasks"] / max(1e-9, produced["issued_at"] - produced["t0"]), 1),
        "deliveries_created": created,
        "deliveries_done": db_done,
        "deliveries_done_metrics": done_metrics,
        "deliveries_per_s": round((m_run.get(DONE, 0) - m0.get(DONE, 0)) / run_s, 1),
        "done_when_producer_stopped": int(m_run.get(DONE, 0) - m0.get(DONE, 0)),
        "drain_s": round(r["drained_at"] - r["stopped"], 2) if r["drained_at"] is not None else None,
        "create_latency_p50_ms": _ms(produced["latency_p50"]),
        "create_latency_p99_ms": _ms(produced["latency_p99"]),
        "create_latency_max_ms": _ms(produced["latency_max"]),
        "create_latency_by_minute": produced["latency_by_minute"],
        "producer_lag_max_s": round(produced["lag_max_s"], 3),
        "tasks_not_issued": int(produced["not_issued"]),
        "cuts": cuts,
        "cut_waves": sum(x.get("cut_waves", 0) for x in results),
        "short_waves": sum(x.get("short_waves", 0) for x in results),
        "client_sessions_opened": client["sessions_opened"],
        "reconnects": reconnects,
        "tetherd_sessions_opened": int(m_end.get(OPENED, 0) - m0.get(OPENED, 0)),
        "sessions_open_end": int(m_end.get(AGENT_SESSIONS, 0)),
        "duplicates_received": client["duplicates_received"],
        "sessions_throttled": int(m_end.get("tether_sessions_throttled_total", 0)  # frame budget pauses
                                  - m0.get("tether_sessions_throttled_total", 0)),
        "executed": client["executed"],
        "timers_pending_start": int(m0.get("tether_timers_pending", 0)),
        "timers_pending_end": int(m_end.get("tether_timers_pending", 0)),
        "asyncio_tasks_start": int(m0.get("tether_asyncio_tasks", 0)),
        "asyncio_tasks_end": int(m_end.get("tether_asyncio_tasks", 0)),
        "tetherd_cpu_percent": round(100.0 * tetherd_cpu / whole, 1),
        "agents_cpu_percent": round(100.0 * agents_cpu / whole, 1),
        "producer_cpu_percent": round(100.0 * producer_cpu / whole, 1),
        "others_cpu_percent": round(100.0 * (busy - tetherd_cpu - agents_cpu - producer_cpu) / whole, 1),
        "database_mib": round(r["db_bytes"] / MIB, 1),
        "group_commits": int(m_end.get("tether_store_commits_total", 0) - m0.get("tether_store_commits_total", 0)),
        "connect_all_s": round(r["connect_s"], 2),
        "enroll_s": round(r["enroll_s"], 2),
        "tag_groups": len(r["groups"]),
        "metrics_failed_scrapes": r["failed_scrapes"],
        "error_counts": {k: v for k, v in errors.items() if v},
        "tasks_by_target": produced["tasks_by_target"],
        "deliveries_by_target": produced["deliveries_by_target"],
        "database_states": r["db_states"],
        "create_error_kinds": produced["error_kinds"],
        "create_error_samples": produced["error_samples"],
        "client_problems": client["client_problems"],
        "tetherd_log_problems": r["log_problems"],
        "tetherd_exit_code": r["exit_code"],
        "series": r["series"],
    }
    print(f"  soak memory: start {figures['rss_start_mib']} MiB, end {figures['rss_end_mib']} MiB, peak "
          f"{figures['rss_peak_mib']} MiB; bound {figures['rss_bound']} = {figures['rss_bound_mib']} MiB: "
          f"{figures['memory']}", flush=True)
    print(f"  soak work: {figures['tasks_created']:,} tasks, {created:,} deliveries created, {db_done:,} done "
          f"({figures['deliveries_per_s']:,}/s while flowing, drained {figures['drain_s']} s after the producer "
          f"stopped); {cuts:,} cuts, {reconnects:,} reconnects"
          + (f"; {figures['tasks_not_issued']:,} tasks not issued (behind schedule at the end)"
             if figures["tasks_not_issued"] else ""), flush=True)
    print(f"  soak errors: {total_errors} {figures['error_counts'] or ''}: {verdict}", flush=True)
    return figures


__all__ = ["run_soak"]
