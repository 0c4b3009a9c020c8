"""``polls``: polling commands at a steady rate through a real tetherd, and what they cost it.

Every simulated agent serves ``bench_poll``, which always asks to run again in
``INTERVAL`` seconds (a ``ScheduledCommand``, the XSOAR form the decorator is built on).
``--agents`` x ``--per-agent`` sequences, started together, then run at
at most ``agents * per_agent * 60 / INTERVAL`` runs a minute: the defaults, 200 x 90 sequences
every 10 s (tetherd's default floor), are ~100,000 runs a minute. Between runs each
sequence is one entry on tetherd's timer wheel, nothing else.

After a warm-up (every sequence waiting once), the window of ``WINDOW`` seconds counts
runs committed (``tether_deliveries_total{state="waiting"}``) and tetherd's CPU time.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from tether.agent import Agent, ScheduledCommand

from .fleet import Fleet
from .scenarios import MIB, BenchError, Options, _Sampler, machine_busy_seconds
from .seed import enroll_fleet, queue_tasks
from .tetherd import Tetherd

INTERVAL = 10.0
"""Seconds between a sequence's runs: tetherd's default ``min_interval``."""
WINDOW = 60.0
"""The measured window: one minute of steady polling."""
WAITING = 'tether_deliveries_total{state="waiting"}'

agent = Agent("bench-polls")


@agent.command("bench_poll")
async def bench_poll(args: dict[str, Any]) -> ScheduledCommand:
    return ScheduledCommand("bench_poll", INTERVAL, timeout_in_seconds=3600, partial_result={"n": args.get("n", 0)})


def run_polls(opts: Options) -> dict[str, Any]:
    sequences = opts.agents * opts.per_agent
    with Tetherd(opts.settings) as tetherd:
        identities = asyncio.run(enroll_fleet(tetherd.url, tetherd.enroll_key, opts.agents,
                                              run_id=uuid.uuid4().hex[:8]))
        asyncio.run(queue_tasks(tetherd.url, tetherd.admin_token, [
            {"command": "bench_poll", "agent": ident.agent_id, "args": {"n": n}}
            for ident in identities for n in range(opts.per_agent)]))
        sampler = _Sampler(tetherd)
        fleet = Fleet(identities, opts.procs, max_seconds=opts.timeout + WINDOW + 120,
                      commands="bench.polls:agent")
        fleet.start()
        try:
            go = fleet.go()
            deadline = go + opts.timeout
            while (m := tetherd.metrics()).get(WAITING, 0) < sequences:
                if time.monotonic() > deadline or not fleet.alive():
                    raise BenchError(f"warm-up: {m.get(WAITING, 0):.0f}/{sequences} sequences waiting")
                sampler.sample()
                time.sleep(0.2)
            warm = time.monotonic()
            cpu0, busy0, m0 = tetherd.cpu_seconds(), machine_busy_seconds(), tetherd.metrics()
            tasks_peak = 0.0
            while time.monotonic() < warm + WINDOW:
                time.sleep(1.0)
                sampler.sample()
                tasks_peak = max(tasks_peak, tetherd.metrics().get("tether_asyncio_tasks", 0))
            cpu1, busy1, m1 = tetherd.cpu_seconds(), machine_busy_seconds(), tetherd.metrics()
            elapsed = time.monotonic() - warm
            results = fleet.finish()
        finally:
            fleet.close()
        problems = tetherd.log_levels()
        exit_code = tetherd.stop()
    runs = m1.get(WAITING, 0) - m0.get(WAITING, 0)
    cpu = cpu1 - cpu0
    return {
        "sequences": sequences,
        "runs_per_minute": round(runs * 60.0 / elapsed),
        "tetherd_cpu_percent": round(100.0 * cpu / elapsed, 1),
        "tetherd_cpu_ms_per_run": round(1000.0 * cpu / runs, 3) if runs else None,
        "agents_and_others_cpu_percent": round(100.0 * ((busy1 - busy0) - cpu) / elapsed, 1),
        "timers_pending": int(m1.get("tether_timers_pending", 0)),
        "asyncio_tasks_peak": int(tasks_peak),
        "tetherd_rss_peak_mib": round(sampler.peak / MIB, 1),
        "failed_runs": int(m1.get('tether_deliveries_total{state="failed"}', 0)),
        "client_problems": {k: v for r in results for k, v in r.get("problems", {}).items()},
        "tetherd_log_problems": problems,
        "tetherd_exit_code": exit_code,
        "window_s": round(elapsed, 1),
    }
