"""``python -m bench.timeline``: one fan-out, with each process's CPU every 100 ms.

    python -m bench.timeline [--agents 10000] [--procs 2]

Starts a tetherd with default settings, brings ``--agents`` simulated agents (tag
``fanout``) online from ``--procs`` worker processes, creates one tag task for them all,
and prints, for each 100 ms from the create until every result is committed, the CPU of
each worker and of tetherd (100 % = one core) and how many agents received their task in
that slice. It shows which process the end-to-end fan-out waits for at each moment; the
figures for the comparison come from ``python -m bench create``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import psutil

from .create import FANOUT_TAG, _fanout
from .fleet import Fleet
from .scenarios import AGENT_SESSIONS, DONE, BenchError
from .seed import enroll_fleet, tagged_key
from .tetherd import Tetherd

SLICE = 0.1
TIMEOUT = 120.0


def _metric(tetherd: Tetherd, key: str) -> float:
    try:
        return tetherd.metrics().get(key, 0.0)
    except OSError:  # a scrape can time out while 10,000 agents connect
        return 0.0


def _wait(until: float, done: Callable[[], bool]) -> None:
    while not done():
        if time.monotonic() > until:
            raise BenchError("timed out")
        time.sleep(0.05)


@contextlib.contextmanager
def online_fleet(agents: int, procs: int) -> Iterator[tuple[Tetherd, Fleet]]:
    """A tetherd with default settings and ``agents`` simulated agents (tag ``fanout``)
    online from ``procs`` worker processes, the storm's writes settled; closed on exit."""
    with Tetherd({}) as tetherd:
        key = asyncio.run(tagged_key(tetherd.url, tetherd.admin_token, [FANOUT_TAG]))
        ids = asyncio.run(enroll_fleet(tetherd.url, key, agents, run_id=uuid.uuid4().hex[:8]))
        fleet = Fleet(ids, procs, max_seconds=TIMEOUT * 2)
        fleet.start()
        try:
            fleet.go()
            _wait(time.monotonic() + TIMEOUT, lambda: _metric(tetherd, AGENT_SESSIONS) >= agents)
            time.sleep(2.0)
            yield tetherd, fleet
        finally:
            fleet.close()


def run(agents: int, procs: int) -> list[str]:
    with online_fleet(agents, procs) as (tetherd, fleet):
        watched = [psutil.Process(pid) for pid in fleet.pids] + [psutil.Process(tetherd.pid)]
        samples: list[tuple[float, list[float]]] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                samples.append((time.monotonic(), [sum(p.cpu_times()[:2]) for p in watched]))
                time.sleep(SLICE)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        done0 = _metric(tetherd, DONE)
        sent, _, _ = asyncio.run(_fanout(tetherd.url, tetherd.admin_token))
        try:
            _wait(sent + TIMEOUT, lambda: _metric(tetherd, DONE) >= done0 + agents)
        finally:
            stop.set()
            sampler.join()
        results = fleet.finish()
    received = sorted(at for r in results for at in r["first_task"] if at is not None and at >= sent)
    names = [f"worker {i + 1}" for i in range(len(watched) - 1)] + ["tetherd"]
    lines = [f"{len(received)} agents received their task; the median after {received[len(received) // 2] - sent:.3f} s, "
             f"the last after {received[-1] - sent:.3f} s" if received else "no agent received its task"]
    for (t0, c0), (t1, c1) in itertools.pairwise(samples):
        cpu = "  ".join(f"{name} {100 * (b - a) / (t1 - t0):4.0f} %" for name, a, b in zip(names, c0, c1, strict=True))
        got = sum(1 for at in received if t0 <= at < t1)
        lines.append(f"{t1 - sent:+6.2f} s  {cpu}  received {got}")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.timeline", description=__doc__.split("\n\n")[0])
    p.add_argument("--agents", type=int, default=10_000)
    p.add_argument("--procs", type=int, default=2)
    args = p.parse_args()
    print("\n".join(run(args.agents, args.procs)))


if __name__ == "__main__":
    main()
