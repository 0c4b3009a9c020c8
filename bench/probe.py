"""A tetherd that records when it writes task frames and how long its garbage collections take.

Run a scenario with it in place of tetherd::

    TETHER_BENCH_TETHERD="python -m bench.probe" TETHER_PROBE_DIR=/tmp/probe python -m bench create --repeat 1
    python -m bench.probe --summary /tmp/probe --last 10000

Each tetherd started that way writes ``probe-<pid>.json`` into ``TETHER_PROBE_DIR`` when it
exits: the wall-clock time of every push (one entry per ``task`` frame, taken when the
session takes it off its queue to write it) and of every garbage collection (generation,
milliseconds, objects collected). ``--summary`` prints, for each file, when the last
``--last`` pushes happened relative to the first of them (the fan-out's share that is
tetherd's alone, to the millisecond: the ``/metrics`` poll of ``fanout_written_s`` is late
whenever tetherd's loop or the harness is busy) and the collections during those pushes
and the 5 s after them.

It patches one private method of the daemon and adds a ``gc`` callback, so it is a probe
for finding out where time goes, not a way to measure figures for the comparison.
"""

from __future__ import annotations

import argparse
import atexit
import gc
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

DIR_ENV = "TETHER_PROBE_DIR"
AFTER = 5.0
"""Seconds after the last push in which ``--summary`` still lists collections."""


def _install(out_dir: Path) -> None:
    from tether.daemon import session

    pushes: list[tuple[float, int]] = []
    collections: list[tuple[float, int, float, int]] = []
    take = session.AgentSession._take

    def timed_take(self: session.AgentSession) -> list[Any]:
        batch = take(self)
        if batch:
            pushes.append((time.time(), len(batch)))
        return batch

    session.AgentSession._take = timed_take  # type: ignore[method-assign]
    started = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            collections.append((time.time(), info["generation"], 1000 * (time.perf_counter() - started[0]),
                                info["collected"]))

    gc.callbacks.append(on_gc)

    def write() -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        doc = {"pushes": pushes, "collections": collections}
        (out_dir / f"probe-{os.getpid()}.json").write_text(json.dumps(doc))

    atexit.register(write)


def summary(path: Path, last: int) -> list[str]:
    doc = json.loads(path.read_text())
    times = [at for at, n in doc["pushes"] for _ in range(n)][-last:]
    if not times:
        return [f"{path.name}: no pushes"]
    first, end = times[0], times[-1]
    lines = [f"{path.name}: last {len(times)} task frames written within {end - first:.3f} s of the first of them "
             f"(p50 {times[len(times) // 2] - first:.3f} s)"]
    window = [c for c in doc["collections"] if first <= c[0] <= end + AFTER]
    during = [c for c in window if c[0] <= end]
    lines.append(f"  garbage collections while they were written: {len(during)}, "
                 f"{sum(c[2] for c in during):.0f} ms in all; in the {AFTER:g} s after: "
                 f"{len(window) - len(during)}, {sum(c[2] for c in window[len(during):]):.0f} ms")
    for at, generation, ms, collected in window:
        lines.append(f"    +{at - first:6.3f} s  gen {generation}  {ms:6.1f} ms  {collected} collected")
    return lines


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--summary":
        p = argparse.ArgumentParser(prog="python -m bench.probe")
        p.add_argument("--summary", type=Path, required=True, help="the TETHER_PROBE_DIR of a run")
        p.add_argument("--last", type=int, default=10_000, help="how many of the last pushes to look at")
        args = p.parse_args()
        files = sorted(args.summary.glob("probe-*.json"))
        if not files:
            print(f"no probe-*.json in {args.summary}", file=sys.stderr)
            return 1
        for f in files:
            print("\n".join(summary(f, args.last)))
        return 0
    out = os.environ.get(DIR_ENV)
    if not out:
        print(f"set {DIR_ENV} to the directory the probe writes to", file=sys.stderr)
        return 2
    _install(Path(out))
    from tether.daemon.cli import main as tetherd

    sys.argv[0] = "tetherd"
    return tetherd()


if __name__ == "__main__":
    sys.exit(main())
