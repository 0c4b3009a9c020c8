"""``create``: tasks created through the console, one agent at a time and by tag to a fleet.

Three phases on one fresh tetherd:

1. **single-agent, concurrent**: ``per_agent`` ``task.create`` calls for each of
   :data:`SINK_AGENTS` enrolled, offline agents, many in flight on a few console sessions
   (as ``bench/seed.py`` queues every scenario's tasks): tasks created per second, from the
   first request to the last answer (an answer is sent once the task is committed).
2. **single-agent, one at a time**: :data:`SEQUENTIAL` creates on one session, each waiting
   for the previous answer: the latency of one create (p50 / p99).
3. **fan-out**: ``agents`` agents enrolled with the tag ``fanout`` are all online (the real
   ``AgentClient`` fleet, idle until then); one ``task.create`` with ``tag=fanout``. Times
   from sending the request: the answer (all ``agents`` deliveries committed), the last
   agent's first ``tasks_received`` (pushed, journaled, ack queued: client side), and
   every result committed (``/metrics``). ``fanout_written_s`` is when tetherd's
   ``tether_deliveries_pushed_total`` had grown by ``agents``: every task frame written to
   its socket, tetherd's share of the push, told apart from the clients'. (Both come from
   the 50 ms ``/metrics`` poll, so they may be late by one poll.)
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from tether.console import ConsoleClient

from .fleet import Fleet
from .scenarios import (
    AGENT_SESSIONS,
    DONE,
    MIB,
    BenchError,
    Options,
    _fleet_figures,
    _ms,
    _Profiler,
    _Sampler,
    _Watch,
    listen_drops,
    machine_busy_seconds,
    percentile,
)
from .seed import echo_tasks, enroll_fleet, queue_tasks, tagged_key
from .tetherd import Tetherd

SINK_AGENTS = 100
SEQUENTIAL = 200
FANOUT_TAG = "fanout"
PUSHED = "tether_deliveries_pushed_total"
SETTLE = 2.0
"""Seconds between the last fleet session opening and the fan-out create (the storm's
writes drain first)."""


async def _sequential(url: str, token: str, agent_ids: list[str], n: int) -> list[float]:
    latencies: list[float] = []
    async with ConsoleClient(url, token) as console:
        for i in range(n):
            t = time.monotonic()
            await console.call("task.create", {"command": "echo", "agent": agent_ids[i % len(agent_ids)],
                                               "args": {"n": i}})
            latencies.append(time.monotonic() - t)
    return latencies


async def _fanout(url: str, token: str) -> tuple[float, float, dict[str, Any]]:
    async with ConsoleClient(url, token) as console:
        sent = time.monotonic()
        created = await console.call("task.create", {"command": "echo", "tag": FANOUT_TAG, "args": {"n": 0}})
        answered = time.monotonic()
    return sent, answered, created


def run_create(opts: Options) -> dict[str, Any]:
    run_id = uuid.uuid4().hex[:8]
    with Tetherd(opts.settings) as tetherd:
        url, token = tetherd.url, tetherd.admin_token
        t = time.monotonic()
        fleet_key = asyncio.run(tagged_key(url, token, [FANOUT_TAG]))  # the first start's key gives no tags
        fleet_ids = asyncio.run(enroll_fleet(url, fleet_key, opts.agents, run_id=run_id))
        sinks = asyncio.run(enroll_fleet(url, tetherd.enroll_key, SINK_AGENTS, run_id=f"{run_id}-sink"))
        enroll_s = time.monotonic() - t
        sampler = _Sampler(tetherd)

        # 1. single-agent creates, many in flight
        tasks = echo_tasks(sinks, opts.per_agent, opts.arg_bytes)
        busy0, cpu0 = machine_busy_seconds(), tetherd.cpu_seconds()
        t = time.monotonic()
        created = asyncio.run(queue_tasks(url, token, tasks))
        single_s = time.monotonic() - t
        single_cpu = tetherd.cpu_seconds() - cpu0
        single_others = (machine_busy_seconds() - busy0) - single_cpu
        if sum(c["deliveries"] for c in created) != len(tasks):
            raise BenchError("single-agent creates: not every task got its delivery")

        # 2. one at a time
        latencies = asyncio.run(_sequential(url, token, [s.agent_id for s in sinks], SEQUENTIAL))

        # 3. fan-out to the online fleet
        rss_before_fleet = sampler.sample()
        fleet = Fleet(fleet_ids, opts.procs, max_seconds=opts.timeout + 60, concurrency=opts.agent_concurrency)
        fleet.start()
        try:
            go = fleet.go()
            watch = _Watch(tetherd, fleet, sampler)
            watch.until(go, go + opts.timeout, lambda m: m.get(AGENT_SESSIONS, 0) >= opts.agents,
                        lambda m: f"open sessions={m.get(AGENT_SESSIONS, 0):.0f}/{opts.agents}")
            time.sleep(SETTLE)
            rss_online = sampler.sample()
            sampler.peak = 0
            m0 = tetherd.metrics()
            drops0 = listen_drops()
            busy0, cpu0 = machine_busy_seconds(), tetherd.cpu_seconds()
            profiler = _Profiler(tetherd.pid, opts.profile, opts.profile_all)  # the fan-out is the measured phase
            try:
                sent, answered, fan = asyncio.run(_fanout(url, token))
                out0 = m0.get(PUSHED, 0)
                written, _ = watch.until(sent, sent + opts.timeout,
                                         lambda m: m.get(PUSHED, 0) - out0 >= opts.agents,
                                         lambda m: f"pushed={m.get(PUSHED, 0) - out0:.0f}/{opts.agents}")
                done_target = m0.get(DONE, 0) + opts.agents
                end, m1 = watch.until(sent, sent + opts.timeout, lambda m: m.get(DONE, 0) >= done_target,
                                      lambda m: f"done={m.get(DONE, 0) - m0.get(DONE, 0):.0f}/{opts.agents}")
            finally:
                profiler.stop()
            cpu1, busy1 = tetherd.cpu_seconds(), machine_busy_seconds()
            drops1 = listen_drops()
            results = fleet.finish()
        finally:
            fleet.close()
        log_problems = tetherd.log_levels()
        exit_code = tetherd.stop()
    client = _fleet_figures(results, go)
    received = [at for r in results for at in r["first_task"] if at is not None and at >= sent]
    if fan["deliveries"] != opts.agents or len(received) != opts.agents:
        raise BenchError(f"fan-out: {fan['deliveries']} deliveries created, {len(received)} agents received "
                         f"their task, {opts.agents} agents online")
    pushed_s = max(received) - sent
    window = end - sent
    return {
        "single_tasks_per_s": round(len(tasks) / single_s, 1),
        "single_tasks": len(tasks),
        "single_tetherd_cpu_percent": round(100.0 * single_cpu / single_s, 1),
        "single_others_cpu_percent": round(100.0 * single_others / single_s, 1),
        "create_latency_p50_ms": _ms(percentile(latencies, 50)),
        "create_latency_p99_ms": _ms(percentile(latencies, 99)),
        "fanout_committed_and_pushed_s": round(max(answered - sent, pushed_s), 3),
        "fanout_committed_s": round(answered - sent, 3),
        "fanout_pushed_s": round(pushed_s, 3),
        "fanout_written_s": round(written - sent, 3),
        "fanout_pushed_p50_s": round(percentile([r - sent for r in received], 50) or 0.0, 3),
        "fanout_done_s": round(window, 3),
        "fanout_agents": opts.agents,
        "fanout_deliveries": int(fan["deliveries"]),
        "fanout_tetherd_cpu_percent": round(100.0 * (cpu1 - cpu0) / window, 1),
        "fanout_machine_cpu_percent": round(100.0 * (busy1 - busy0) / window, 1),
        "fanout_group_commits": int(m1.get("tether_store_commits_total", 0) - m0.get("tether_store_commits_total", 0)),
        "tetherd_rss_fleet_offline_mib": round(rss_before_fleet / MIB, 1),
        "tetherd_rss_fleet_online_mib": round(rss_online / MIB, 1),
        "tetherd_rss_peak_mib": round(sampler.peak / MIB, 1),
        "enroll_s": round(enroll_s, 3),
        **{k: client[k] for k in ("fatal", "crashed", "duplicates_received", "client_problems")},
        "errors": client["fatal"] + client["crashed"] + sum(client["client_problems"].values())
                  + sum(log_problems.values()),
        **watch.figures(),
        "listen_overflows": {k: drops1[k] - drops0[k] for k in drops1 if k in drops0},
        "tetherd_log_problems": log_problems,
        "tetherd_exit_code": exit_code,
    }
