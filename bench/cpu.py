"""``python -m bench.cpu``: CPU per agent, client and tetherd, in one fan-out; for A/B runs.

    python -m bench.cpu [--agents 3000] [--procs 1] [--repeat 3]

Starts a tetherd with default settings, brings ``--agents`` simulated agents (tag
``fanout``) online from ``--procs`` worker processes, creates one tag task for them all,
and measures, from the create until every result is committed, the CPU time the workers
and tetherd spent (``psutil``), divided by the number of agents: what one quick task costs
an agent (journal, run, messages) and what one agent costs tetherd (its commit thread
shown apart). It also prints when the last agent had its task and how many messages
tetherd received per agent. A fleet in one worker makes the client's figure steady; the
end-to-end fan-out figure for the comparison comes from ``python -m bench create``.

For an A/B of two commits, run it alternately from two git worktrees, each with
``PYTHONPATH`` set to its worktree and ``TETHER_BENCH_TETHERD`` to a tetherd started from
it (bench/README.md, "Another tetherd").
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

import psutil

from .create import _fanout
from .scenarios import DONE
from .timeline import TIMEOUT, _metric, _wait, online_fleet

FRAMES_IN = 'tether_frames_total{direction="in"}'


def _threads(pid: int) -> dict[int, float]:
    return {t.id: t.user_time + t.system_time for t in psutil.Process(pid).threads()}


def run(agents: int, procs: int) -> dict[str, Any]:
    with online_fleet(agents, procs) as (tetherd, fleet):
        workers = [psutil.Process(pid) for pid in fleet.pids]
        done0, frames0 = _metric(tetherd, DONE), _metric(tetherd, FRAMES_IN)
        clients0, threads0 = sum(sum(w.cpu_times()[:2]) for w in workers), _threads(tetherd.pid)
        sent, _, _ = asyncio.run(_fanout(tetherd.url, tetherd.admin_token))
        _wait(sent + TIMEOUT, lambda: _metric(tetherd, DONE) >= done0 + agents)
        done_s = time.monotonic() - sent
        clients1, threads1 = sum(sum(w.cpu_times()[:2]) for w in workers), _threads(tetherd.pid)
        frames1 = _metric(tetherd, FRAMES_IN)
        results = fleet.finish()
    spent = sorted((threads1[t] - threads0.get(t, 0.0) for t in threads1), reverse=True)
    received = [at for r in results for at in r["first_task"] if at is not None and at >= sent]
    us = 1e6 / agents
    return {
        "client_us_per_agent": round(us * (clients1 - clients0)),
        "tetherd_us_per_agent": round(us * sum(spent)),
        "tetherd_busiest_thread_us": round(us * spent[0]),  # the event loop
        "tetherd_other_threads_us": round(us * sum(spent[1:])),  # the commit thread, mostly
        "last_agent_s": round(max(received) - sent, 3) if received else None,
        "every_result_committed_s": round(done_s, 3),
        "messages_in_per_agent": round((frames1 - frames0) / agents, 2),
    }


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.cpu", description=__doc__.split("\n\n")[0])
    p.add_argument("--agents", type=int, default=3_000)
    p.add_argument("--procs", type=int, default=1)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    runs = []
    for i in range(args.repeat):
        runs.append(run(args.agents, args.procs))
        print(f"repeat {i + 1}/{args.repeat}: {runs[-1]}", flush=True)
    for key in runs[0]:
        values = [r[key] for r in runs if r[key] is not None]
        if values:
            print(f"{key:28s} median {round(statistics.median(values), 3):>9}  {values}")


if __name__ == "__main__":
    main()
