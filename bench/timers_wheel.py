"""What the timer wheel costs with a daemon's worth of pending entries.

    python bench/timers_wheel.py [--entries N] [--json FILE]

Schedules N entries (default 1,000,000) spread uniformly over 1 hour .. 1 week ahead,
as TTL expiries are, then measures: memory held by the wheel (tracemalloc, and the
process RSS delta), schedule and cancel cost, one tick with nothing due, one tick with
1,000 due, ``next_due()``, and a one-hour jump that cascades and fires what falls in it.
Prints a table and, with --json, writes the same figures as JSON.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import random
import resource
import statistics
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tether.daemon.wheel import TimerHandle, TimerWheel

try:
    import psutil
except ImportError:  # RSS then comes from /proc or getrusage only
    psutil = None

HOUR = 3600.0
WEEK = 7 * 86400.0
START = 1_000_000.0  # any monotonic clock reading
ITEM = object()  # one shared item, so the figures are the wheel's own cost


def rss_bytes() -> int:
    if psutil is not None:
        return int(psutil.Process().memory_info().rss)
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * resource.getpagesize()
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def fill(wheel: TimerWheel[object], n: int, rng: random.Random) -> list[TimerHandle[object]]:
    handles: list[TimerHandle[object]] = [None] * n  # type: ignore[list-item]
    schedule = wheel.schedule
    for i in range(n):
        handles[i] = schedule(START + rng.uniform(HOUR, WEEK), ITEM)
    return handles


def per_call(seconds: float, calls: int) -> float:
    return seconds / calls * 1e6


def run(n: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    tick = 0.05
    results: dict[str, Any] = {
        "entries": n,
        "spread": "uniform 1 hour .. 1 week",
        "wheel": {"tick": tick, "slots": 256, "levels": 5},
        "python": platform.python_version(),
        "machine": platform.machine(),
    }

    # Build the wheel the daemon would hold; RSS delta with nothing else allocated.
    gc.collect()
    rss_before = rss_bytes()
    wheel: TimerWheel[object] = TimerWheel(START, tick=tick)
    started = time.perf_counter()
    handles = fill(wheel, n, rng)
    elapsed = time.perf_counter() - started
    gc.collect()
    rss_after = rss_bytes()
    handles_list = sys.getsizeof(handles)
    results["schedule_us"] = per_call(elapsed, n)
    results["rss_delta_bytes"] = rss_after - rss_before - handles_list
    results["rss_bytes_per_entry"] = results["rss_delta_bytes"] / n
    results["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    now = START

    # One tick with nothing due: what the daemon pays every time it wakes for nothing.
    calls = 20_000
    started = time.perf_counter()
    for _ in range(calls):
        now += tick
        wheel.advance(now)
    results["tick_idle_us"] = per_call(time.perf_counter() - started, calls)

    # next_due(): what the daemon pays to decide how long to sleep.
    calls = 20_000
    started = time.perf_counter()
    for _ in range(calls):
        wheel.next_due()
    results["next_due_us"] = per_call(time.perf_counter() - started, calls)

    # One tick with 1,000 due (a burst of expiries in the same 50 ms).
    samples = []
    for _ in range(30):
        for _ in range(1000):
            wheel.schedule(now + rng.uniform(0.0, tick), ITEM)
        now += tick
        started = time.perf_counter()
        fired = wheel.advance(now)
        samples.append(time.perf_counter() - started)
        assert len(fired) == 1000, len(fired)
    results["tick_1000_due_ms"] = statistics.median(samples) * 1e3
    results["tick_1000_due_us_per_entry"] = results["tick_1000_due_ms"] * 1e3 / 1000

    # Cancel: tasks that finish before their TTL withdraw their expiry.
    victims = rng.sample(range(n), n // 10)
    started = time.perf_counter()
    for i in victims:
        wheel.cancel(handles[i])
    results["cancel_us"] = per_call(time.perf_counter() - started, len(victims))
    pending = len(wheel)

    # A one-hour jump ahead: cascades down and fires what falls into the first hour+.
    started = time.perf_counter()
    fired = wheel.advance(now + 2 * HOUR)
    results["jump_2h_ms"] = (time.perf_counter() - started) * 1e3
    results["jump_2h_fired"] = len(fired)
    results["jump_2h_us_per_fired"] = results["jump_2h_ms"] * 1e3 / max(1, len(fired))
    assert len(wheel) == pending - len(fired)

    del wheel, handles, fired
    gc.collect()

    # tracemalloc last: it slows allocation, and the figure is allocation-exact.
    rng = random.Random(seed)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    wheel = TimerWheel(START, tick=tick)
    handles = fill(wheel, n, rng)
    traced = tracemalloc.get_traced_memory()[0] - before - sys.getsizeof(handles)
    tracemalloc.stop()
    results["traced_bytes"] = traced
    results["traced_bytes_per_entry"] = traced / n
    results["handle_object_bytes"] = sys.getsizeof(handles[0])
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000, help="pending entries (default 1,000,000)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    results = run(args.entries, args.seed)
    rows = [
        ("entries", f"{results['entries']:,}"),
        ("memory, tracemalloc", f"{results['traced_bytes'] / 2**20:.1f} MiB = {results['traced_bytes_per_entry']:.1f} B/entry"),
        ("memory, RSS delta", f"{results['rss_delta_bytes'] / 2**20:.1f} MiB = {results['rss_bytes_per_entry']:.1f} B/entry"),
        ("handle object", f"{results['handle_object_bytes']} B (+ its when float)"),
        ("schedule", f"{results['schedule_us']:.2f} us"),
        ("cancel", f"{results['cancel_us']:.2f} us"),
        ("tick, nothing due", f"{results['tick_idle_us']:.2f} us"),
        ("tick, 1,000 due", f"{results['tick_1000_due_ms']:.2f} ms ({results['tick_1000_due_us_per_entry']:.2f} us/entry)"),
        ("next_due()", f"{results['next_due_us']:.2f} us"),
        ("jump 2 h", f"{results['jump_2h_ms']:.1f} ms, {results['jump_2h_fired']:,} fired "
                     f"({results['jump_2h_us_per_fired']:.2f} us/fired, cascades included)"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
