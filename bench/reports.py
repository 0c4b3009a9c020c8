"""``reports``: a fleet's reports through a real tetherd: every agent sends one alert a minute
(issue 19), and what that costs tetherd per hour: CPU and database growth.

``--agents`` (10,000) agents are enrolled with the real enrollment code, then each opens a
raw agent session (hello, then only ``alert`` frames: what tetherd does with them is what is
measured, not the agent's journal) in ``--procs`` (2) worker processes. Each agent sends one
alert every :data:`PERIOD` seconds at its own random phase and reads tetherd's ``alerted``
(the round trip is the latency figure). ``--per-agent``: how many distinct alerts each agent
cycles through (1, the default: the same alert every minute, tetherd's steady state of
deduplication; 0: every alert new, the worst case for the database).

After every session is open and :data:`WARMUP` seconds have passed (every agent has sent
its first alert), the window of ``--minutes`` (2) counts alerts taken, tetherd's CPU time and
the database's bytes (its pages as committed) and rows; per hour is the window scaled. Before
the agents start sending, :data:`IDLE` seconds with every session open and nothing sent give
tetherd's idle CPU (keepalive pings of 10,000 sessions), so the alerts' own cost is seen apart.

Agent state reports (issue 19 item 3, engineer fleet-b) are not sent yet: their frame had
not landed when this was written (docs/performance.md says so).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect

from tether.agent.journal import Identity
from tether.protocol import MSGPACK, PROTOCOL_VERSION, decode_from_daemon
from tether.protocol.alerts import AlertBody
from tether.protocol.frames import Alert, Alerted, Hello, Welcome

from .scenarios import MIB, BenchError, Options, _Sampler, machine_busy_seconds
from .seed import enroll_fleet
from .tetherd import Tetherd

PERIOD = 60.0
"""Seconds between two alerts of one agent."""
WARMUP = PERIOD + 10.0
"""Seconds after every session is open before the window starts: every agent has sent once."""
CONNECT_IN_FLIGHT = 200
IDLE = 30.0
"""Seconds measured with every session open and no alert sent: the sessions' own cost."""


def _database(data_dir: Path) -> tuple[int, int, int]:
    """Bytes of the database as committed (its pages, those still in the WAL included: the
    files' sizes move by a whole WAL at each checkpoint), rows of the alerts table, and the
    copies counted in it."""
    db = sqlite3.connect(f"file:{data_dir / 'tether.sqlite'}?mode=ro", uri=True)
    try:
        size = db.execute("PRAGMA page_count").fetchone()[0] * db.execute("PRAGMA page_size").fetchone()[0]
        rows, copies = db.execute("SELECT count(*), coalesce(sum(count), 0) FROM alerts").fetchone()
    finally:
        db.close()
    return size, int(rows), int(copies)


async def _agent(ident: tuple[str, str, str], distinct: int, seed: int, until: float,
                 stats: dict[str, Any], opened: asyncio.Event, gate: asyncio.Semaphore) -> None:
    """One agent: its session, then an alert every PERIOD from ``opened`` (the harness's go)."""
    url, agent_id, token = ident
    rng = random.Random(seed)
    async with gate:
        ws = await connect(url, compression=None, max_size=1 << 20, open_timeout=120)
        await ws.send(MSGPACK.encode(Hello(role="agent", version=PROTOCOL_VERSION, agent_id=agent_id, token=token)))
        welcome = decode_from_daemon(await ws.recv())
        if not isinstance(welcome, Welcome):
            raise BenchError(f"agent {agent_id} was not welcomed: {welcome!r}")
    stats["open"] += 1
    await opened.wait()
    loop = asyncio.get_running_loop()
    next_at = loop.time() + rng.uniform(0, PERIOD)
    n = 0
    try:
        while True:
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            if time.time() >= until:
                return
            n += 1
            k = n % distinct if distinct else n
            body = AlertBody(kind="bench", name=f"finding-{k}", path=f"/var/lib/app/file-{k}", hash=f"{k:064x}",
                             severity="low", details={"seq": n})
            await ws.send(MSGPACK.encode(Alert(id=n, alert=body, raised_at=time.time())))
            while not isinstance(decode_from_daemon(await ws.recv()), Alerted):
                pass
            next_at += PERIOD
    finally:
        await ws.close()


def _worker(idents: list[tuple[str, str, str]], distinct: int, until: float, go: Any) -> None:
    """One process's agents, until ``until`` (it stops by itself); they send once ``go`` is set."""
    async def main() -> None:
        stats: dict[str, Any] = {"open": 0, "agents": len(idents)}
        opened = asyncio.Event()
        gate = asyncio.Semaphore(CONNECT_IN_FLIGHT)

        async def release() -> None:
            await asyncio.get_running_loop().run_in_executor(None, go.wait)
            opened.set()

        await asyncio.gather(release(), *(_agent(i, distinct, n, until, stats, opened, gate)
                                          for n, i in enumerate(idents)))

    asyncio.run(main())


def run_reports(opts: Options) -> dict[str, Any]:
    window = 60.0 * (opts.minutes or 2.0)
    distinct = opts.per_agent
    with Tetherd(opts.settings) as tetherd:
        identities: list[Identity] = asyncio.run(enroll_fleet(tetherd.url, tetherd.enroll_key, opts.agents,
                                                              run_id=uuid.uuid4().hex[:8]))
        idents = [(tetherd.url, i.agent_id, i.token) for i in identities]
        until = time.time() + 300 + WARMUP + window  # the workers stop by themselves
        ctx = multiprocessing.get_context("spawn")
        go = ctx.Event()
        workers = [ctx.Process(target=_worker, args=(idents[k::opts.procs], distinct, until, go), daemon=True)
            for k in range(opts.procs)]
        for w in workers:
            w.start()
        sampler = _Sampler(tetherd)
        deadline = time.monotonic() + 300
        while tetherd.metrics().get('tether_sessions_open{role="agent"}', 0) < opts.agents:
            if time.monotonic() > deadline or not all(w.is_alive() for w in workers):
                raise BenchError("the fleet's sessions did not all open")
            sampler.sample()
            time.sleep(1.0)
        # Every session open, none sending yet: what 10,000 idle sessions cost (keepalive pings).
        idle0, i0 = tetherd.cpu_seconds(), time.monotonic()
        while time.monotonic() < i0 + IDLE:
            sampler.sample()
            time.sleep(1.0)
        idle_percent = 100.0 * (tetherd.cpu_seconds() - idle0) / (time.monotonic() - i0)
        go.set()
        warm_end = time.monotonic() + WARMUP
        while time.monotonic() < warm_end:
            sampler.sample()
            time.sleep(1.0)
        cpu0, busy0, (bytes0, rows0, copies0), t0 = tetherd.cpu_seconds(), machine_busy_seconds(), \
            _database(tetherd.data_dir), time.monotonic()
        while time.monotonic() < t0 + window:
            sampler.sample()
            time.sleep(1.0)
        cpu1, busy1, (bytes1, rows1, copies1), t1 = tetherd.cpu_seconds(), machine_busy_seconds(), \
            _database(tetherd.data_dir), time.monotonic()
        for w in workers:
            w.terminate()
        problems = tetherd.log_levels()
    elapsed = t1 - t0
    per_hour = 3600.0 / elapsed
    taken = copies1 - copies0
    if not taken:
        raise BenchError("no alert was recorded in the window")
    return {
        "agents": opts.agents,
        "distinct_per_agent": distinct or "every alert",
        "alerts_per_s_offered": round(opts.agents / PERIOD, 1),
        "alerts_per_s_recorded": round(taken / elapsed, 1),
        "tetherd_cpu_percent": round(100.0 * (cpu1 - cpu0) / elapsed, 1),
        "tetherd_idle_cpu_percent": round(idle_percent, 1),
        "tetherd_cpu_s_per_hour": round((cpu1 - cpu0) * per_hour),
        "tetherd_cpu_us_per_alert": round(1e6 * (cpu1 - cpu0) / taken),
        "tetherd_cpu_us_per_alert_over_idle": round(1e6 * ((cpu1 - cpu0) - idle_percent / 100.0 * elapsed) / taken),
        "db_growth_mib_per_hour": round((bytes1 - bytes0) / MIB * per_hour, 1),
        "alert_rows_per_hour": round((rows1 - rows0) * per_hour),
        "alert_rows_end": rows1,
        "db_mib_end": round(bytes1 / MIB, 1),
        "machine_busy_percent": round(100.0 * (busy1 - busy0) / elapsed / psutil_cores(), 1),
        "tetherd_rss_peak_mib": round(sampler.peak / MIB, 1),
        "tetherd_log_problems": problems,
        "window_s": round(elapsed, 1),
    }


def psutil_cores() -> int:
    import psutil

    return psutil.cpu_count() or 1
