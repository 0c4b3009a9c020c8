"""``reports``: a fleet's reports through a real tetherd (issue 19): every agent sends its
state when its session opens and every :data:`STATE_PERIOD` (5 minutes), and one alert a
minute; what that costs tetherd per hour: CPU, database growth, state history rows.

``--agents`` (10,000) agents are enrolled with the real enrollment code, then each opens a
raw agent session (hello with the ``state`` feature, its state report, then only ``state``
and ``alert`` frames: what tetherd does with them is what is measured, not the agent's
journal) in ``--procs`` (2) worker processes. Each agent sends one alert every
:data:`PERIOD` seconds at its own random phase and reads tetherd's ``alerted`` (the round
trip is the latency figure); ``--per-agent``: how many distinct alerts each agent cycles
through (1, the default: the same alert every minute, tetherd's steady state of
deduplication; 0: every alert new, the worst case for the database).

State reports are a simulated machine's (:class:`_Machine`), as ``tether-agent`` sends
them: fixed facts (agent and OS version, platform, hostname, memory size, four commands
served, three mounts), gauges that move on every report (uptime, disk and memory use, tasks
run: tetherd keeps their latest value only), and, rarely, a tracked fact that changes and
so writes one history row: a reboot (boot time, :data:`REBOOT_ODDS` of reports) or a
resized mount (:data:`RESIZE_ODDS`). Each agent's periodic reports start at its own random
phase in the first :data:`STATE_PERIOD`.

Phases, each after the one before: every session open and its opening state stored; then
:data:`IDLE` seconds with nothing sent (tetherd's idle CPU: keepalive pings of 10,000
sessions); the alerts start, :data:`WARMUP` seconds (every agent has sent its first alert);
:data:`ALERTS_ONLY` seconds measured with alerts only; then the periodic state reports start
too and the window of ``--minutes`` (2) is measured: tetherd's CPU time, the database's
bytes (its pages as committed, and per table through ``dbstat``: the alerts' and the
states'), the alert rows, the state history rows. Per hour is the window scaled; the states'
own CPU is the window's rate less the alerts-only rate.
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

import tether
from tether.agent.journal import Identity
from tether.protocol import MSGPACK, PROTOCOL_VERSION, decode_from_daemon
from tether.protocol.agent_state import AgentState, Disk, LastTask
from tether.protocol.alerts import AlertBody
from tether.protocol.frames import Alert, Alerted, Hello, StateReport, Welcome

from .scenarios import MIB, BenchError, Options, _Sampler, machine_busy_seconds
from .seed import enroll_fleet
from .tetherd import Tetherd

PERIOD = 60.0
"""Seconds between two alerts of one agent."""
STATE_PERIOD = 300.0
"""Seconds between two state reports of one agent (``state_interval``'s default)."""
WARMUP = PERIOD + 10.0
"""Seconds after the alerts start before anything is measured: every agent has sent once."""
ALERTS_ONLY = 60.0
"""Seconds measured with alerts and no periodic state report: the alerts' rate of CPU."""
CONNECT_IN_FLIGHT = 200
IDLE = 30.0
"""Seconds measured with every session open and nothing sent: the sessions' own cost."""
REBOOT_ODDS = 0.01
"""Chance that a periodic report follows a reboot (a new boot time: one history row)."""
RESIZE_ODDS = 0.005
"""Chance that a periodic report has a mount grown (its size: one history row)."""
GIB = 1 << 30
STATE_TABLES = ("agent_state", "agent_state_history")


class _Machine:
    """The state a simulated agent reports (the module docstring says what changes)."""

    def __init__(self, rng: random.Random, n: int, now: float) -> None:
        self.rng = rng
        self.boot_time = float(int(now - rng.uniform(3600.0, 60 * 86400.0)))
        self.hostname = f"bench-host-{n:05d}"
        self.disks = {"/": [64 * GIB, int(rng.uniform(0.2, 0.7) * 64 * GIB)],
                      "/var": [200 * GIB, int(rng.uniform(0.1, 0.8) * 200 * GIB)],
                      "/boot/efi": [512 * 1024 * 1024, 6 * 1024 * 1024]}
        self.tasks_run = 0

    def report(self, now: float, periodic: bool) -> StateReport:
        rng = self.rng
        if periodic:
            if rng.random() < REBOOT_ODDS:
                self.boot_time = float(int(now - rng.uniform(30.0, STATE_PERIOD)))
            if rng.random() < RESIZE_ODDS:
                self.disks["/var"][0] += 50 * GIB
            for usage in self.disks.values():
                usage[1] = min(usage[0], usage[1] + rng.randrange(0, 64 * 1024 * 1024))
            self.tasks_run += rng.random() < 0.2
        state = AgentState(
            agent_version=tether.__version__, os="Ubuntu", os_version="22.04.4 LTS", platform="linux-x86_64",
            hostname=self.hostname, boot_time=self.boot_time, uptime=round(now - self.boot_time, 1),
            disks=[Disk(mount=m, total=total, used=used) for m, (total, used) in self.disks.items()],
            memory_total=8 * GIB, memory_used=int(rng.uniform(0.3, 0.7) * 8 * GIB),
            commands=["echo", "scan", "shell", "sleep"], tasks_run=self.tasks_run,
            last_task=LastTask(command="scan", at=round(now - 3600.0, 1)) if self.tasks_run else None)
        return StateReport(state=state, config={})


def _database(data_dir: Path) -> dict[str, int]:
    """Bytes of the database as committed (its pages, those still in the WAL included: the
    files' sizes move by a whole WAL at each checkpoint), those of the alerts' and of the
    states' tables with their indexes (``dbstat``), the rows of the alerts table and the
    copies counted in it, the rows of the state history."""
    db = sqlite3.connect(f"file:{data_dir / 'tether.sqlite'}?mode=ro", uri=True)
    try:
        size = db.execute("PRAGMA page_count").fetchone()[0] * db.execute("PRAGMA page_size").fetchone()[0]
        tables = dict(db.execute("SELECT m.tbl_name, sum(s.pgsize) FROM dbstat s JOIN sqlite_master m"
                                 " ON m.name = s.name GROUP BY m.tbl_name").fetchall())
        rows, copies = db.execute("SELECT count(*), coalesce(sum(count), 0) FROM alerts").fetchone()
        states = db.execute("SELECT count(*) FROM agent_state").fetchone()[0]
        history = db.execute("SELECT count(*) FROM agent_state_history").fetchone()[0]
    finally:
        db.close()
    return {"bytes": size, "alert_bytes": int(tables.get("alerts", 0)),
            "state_bytes": sum(int(tables.get(t, 0)) for t in STATE_TABLES),
            "alert_rows": int(rows), "alert_copies": int(copies), "states": int(states), "history": int(history)}


async def _agent(ident: tuple[str, str, str], distinct: int, seed: int, until: float, stats: dict[str, Any],
                 opened: asyncio.Event, states_on: asyncio.Event, gate: asyncio.Semaphore, sent: Any) -> None:
    """One agent: its session and its opening state report, then an alert every PERIOD from
    ``opened`` (the harness's go) and a state report every STATE_PERIOD from ``states_on``."""
    url, agent_id, token = ident
    rng = random.Random(seed)
    machine = _Machine(rng, seed, time.time())
    async with gate:
        ws = await connect(url, compression=None, max_size=1 << 20, open_timeout=120)
        await ws.send(MSGPACK.encode(Hello(role="agent", version=PROTOCOL_VERSION, agent_id=agent_id, token=token,
                                           features=["state"])))
        welcome = decode_from_daemon(await ws.recv())
        if not isinstance(welcome, Welcome) or "state" not in welcome.features:
            raise BenchError(f"agent {agent_id} was not welcomed with the state feature: {welcome!r}")
        await ws.send(MSGPACK.encode(machine.report(time.time(), periodic=False)))
    stats["open"] += 1
    loop = asyncio.get_running_loop()

    async def pause(at: float) -> bool:
        """Sleep until loop time ``at`` (at most until ``until``): whether to go on."""
        await asyncio.sleep(max(0.0, min(at - loop.time(), until - time.time())))
        return time.time() < until

    async def alerts() -> None:
        await opened.wait()
        next_at = loop.time() + rng.uniform(0, PERIOD)
        n = 0
        while await pause(next_at):
            n += 1
            k = n % distinct if distinct else n
            body = AlertBody(kind="bench", name=f"finding-{k}", path=f"/var/lib/app/file-{k}", hash=f"{k:064x}",
                             severity="low", details={"seq": n})
            await ws.send(MSGPACK.encode(Alert(id=n, alert=body, raised_at=time.time())))
            while not isinstance(decode_from_daemon(await ws.recv()), Alerted):
                pass
            next_at += PERIOD

    async def states() -> None:
        await states_on.wait()
        next_at = loop.time() + rng.uniform(0, STATE_PERIOD)
        while await pause(next_at):
            await ws.send(MSGPACK.encode(machine.report(time.time(), periodic=True)))
            with sent.get_lock():
                sent.value += 1
            next_at += STATE_PERIOD

    try:
        await asyncio.gather(alerts(), states())
    finally:
        await ws.close()


def _worker(idents: list[tuple[str, str, str]], first: int, distinct: int, until: float, go: Any, states_go: Any,
            sent: Any) -> None:
    """One process's agents, until ``until`` (it stops by itself); they send alerts once
    ``go`` is set and periodic state reports once ``states_go`` is."""
    async def main() -> None:
        stats: dict[str, Any] = {"open": 0, "agents": len(idents)}
        opened, states_on = asyncio.Event(), asyncio.Event()
        gate = asyncio.Semaphore(CONNECT_IN_FLIGHT)

        async def release(event: Any, local: asyncio.Event) -> None:
            await asyncio.get_running_loop().run_in_executor(None, event.wait)
            local.set()

        await asyncio.gather(release(go, opened), release(states_go, states_on),
                             *(_agent(i, distinct, first + n, until, stats, opened, states_on, gate, sent)
                               for n, i in enumerate(idents)))

    asyncio.run(main())


def run_reports(opts: Options) -> dict[str, Any]:
    window = 60.0 * (opts.minutes or 2.0)
    distinct = opts.per_agent
    with Tetherd(opts.settings) as tetherd:
        identities: list[Identity] = asyncio.run(enroll_fleet(tetherd.url, tetherd.enroll_key, opts.agents,
                                                              run_id=uuid.uuid4().hex[:8]))
        idents = [(tetherd.url, i.agent_id, i.token) for i in identities]
        until = time.time() + 600 + IDLE + WARMUP + ALERTS_ONLY + window  # the workers stop by themselves
        ctx = multiprocessing.get_context("spawn")
        go, states_go, sent = ctx.Event(), ctx.Event(), ctx.Value("q", 0)
        workers = [ctx.Process(target=_worker, args=(idents[k::opts.procs], k * len(idents), distinct, until, go,
                                                     states_go, sent), daemon=True)
                   for k in range(opts.procs)]
        for w in workers:
            w.start()
        sampler = _Sampler(tetherd)

        def wait(seconds: float) -> None:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                sampler.sample()
                time.sleep(1.0)

        # Every session open and its opening report stored (the baseline: no history row).
        deadline = time.monotonic() + 300
        while (tetherd.metrics().get('tether_sessions_open{role="agent"}', 0) < opts.agents
               or _database(tetherd.data_dir)["states"] < opts.agents):
            if time.monotonic() > deadline or not all(w.is_alive() for w in workers):
                raise BenchError("the fleet's sessions did not all open and report their state")
            wait(1.0)
        # None sending: what 10,000 idle sessions cost (keepalive pings).
        idle0, i0 = tetherd.cpu_seconds(), time.monotonic()
        wait(IDLE)
        idle_percent = 100.0 * (tetherd.cpu_seconds() - idle0) / (time.monotonic() - i0)
        go.set()
        wait(WARMUP)
        # Alerts only.
        cpu_a, db_a, t_a = tetherd.cpu_seconds(), _database(tetherd.data_dir), time.monotonic()
        wait(ALERTS_ONLY)
        alerts_percent = 100.0 * (tetherd.cpu_seconds() - cpu_a) / (time.monotonic() - t_a)
        alerts_only_copies = _database(tetherd.data_dir)["alert_copies"] - db_a["alert_copies"]
        # Alerts and state reports: the window.
        states_go.set()
        cpu0, busy0, db0, sent0, t0 = tetherd.cpu_seconds(), machine_busy_seconds(), \
            _database(tetherd.data_dir), sent.value, time.monotonic()
        wait(window)
        cpu1, busy1, db1, sent1, t1 = tetherd.cpu_seconds(), machine_busy_seconds(), \
            _database(tetherd.data_dir), sent.value, time.monotonic()
        metrics = tetherd.metrics()
        for w in workers:
            w.terminate()
        problems = tetherd.log_levels()
    elapsed = t1 - t0
    per_hour = 3600.0 / elapsed
    taken = db1["alert_copies"] - db0["alert_copies"]
    reports = sent1 - sent0
    if not taken or not alerts_only_copies:
        raise BenchError("no alert was recorded in a window")
    if not reports:
        raise BenchError("no state report was sent in the window")
    cpu = cpu1 - cpu0
    state_cpu = cpu - alerts_percent / 100.0 * elapsed
    idle_cpu = idle_percent / 100.0 * ALERTS_ONLY
    return {
        "agents": opts.agents,
        "distinct_per_agent": distinct or "every alert",
        "alerts_per_s_offered": round(opts.agents / PERIOD, 1),
        "alerts_per_s_recorded": round(taken / elapsed, 1),
        "states_per_s_offered": round(opts.agents / STATE_PERIOD, 1),
        "states_per_s_sent": round(reports / elapsed, 1),
        "states_dropped": int(metrics.get("tether_state_reports_dropped_total", 0)),
        "tetherd_cpu_percent": round(100.0 * cpu / elapsed, 1),
        "tetherd_idle_cpu_percent": round(idle_percent, 1),
        "tetherd_alerts_only_cpu_percent": round(alerts_percent, 1),
        "tetherd_cpu_s_per_hour": round(cpu * per_hour),
        "tetherd_cpu_us_per_alert": round(1e6 * alerts_percent / 100.0 * ALERTS_ONLY / alerts_only_copies),
        "tetherd_cpu_us_per_alert_over_idle": round(1e6 * (alerts_percent / 100.0 * ALERTS_ONLY - idle_cpu)
                                                    / alerts_only_copies),
        "tetherd_states_cpu_s_per_hour": round(state_cpu * per_hour),
        "tetherd_cpu_us_per_state": round(1e6 * state_cpu / reports),
        "db_growth_mib_per_hour": round((db1["bytes"] - db0["bytes"]) / MIB * per_hour, 1),
        "db_alerts_growth_mib_per_hour": round((db1["alert_bytes"] - db0["alert_bytes"]) / MIB * per_hour, 1),
        "db_states_growth_mib_per_hour": round((db1["state_bytes"] - db0["state_bytes"]) / MIB * per_hour, 2),
        "alert_rows_per_hour": round((db1["alert_rows"] - db0["alert_rows"]) * per_hour),
        "history_rows_per_hour": round((db1["history"] - db0["history"]) * per_hour),
        "history_rows_in_window": db1["history"] - db0["history"],
        "alert_rows_end": db1["alert_rows"],
        "db_mib_end": round(db1["bytes"] / MIB, 1),
        "db_states_mib_end": round(db1["state_bytes"] / MIB, 2),
        "machine_busy_percent": round(100.0 * (busy1 - busy0) / elapsed / psutil_cores(), 1),
        "tetherd_rss_peak_mib": round(sampler.peak / MIB, 1),
        "tetherd_log_problems": problems,
        "window_s": round(elapsed, 1),
    }


def psutil_cores() -> int:
    import psutil

    return psutil.cpu_count() or 1
