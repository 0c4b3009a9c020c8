"""``timers``: the timer wheel with a daemon's worth of pending entries, in a fresh interpreter.

Runs ``bench/timers_wheel.py`` (tether's own :class:`~tether.daemon.wheel.TimerWheel`) in a
subprocess, so its memory figures are the wheel's alone, not this harness's, and reads its
JSON: bytes per entry (tracemalloc and RSS), schedule / cancel cost, one tick with nothing
or 1,000 due, ``next_due()``, and a two-hour jump.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from .scenarios import MIB, BenchError, Options

SCRIPT = Path(__file__).with_name("timers_wheel.py")


def run_timers(opts: Options) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="tether-bench-timers-") as tmp:
        out = Path(tmp) / "timers.json"
        proc = subprocess.run([sys.executable, str(SCRIPT), "--entries", str(opts.agents), "--json", str(out)],
                              capture_output=True, text=True, timeout=opts.timeout)
        if proc.returncode != 0:
            raise BenchError(f"timers_wheel.py exited with {proc.returncode}:\n{proc.stderr[-2000:]}")
        r = json.loads(out.read_text())
    return {
        "wheel_rss_mib": round(r["rss_delta_bytes"] / MIB, 1),
        "wheel_traced_mib": round(r["traced_bytes"] / MIB, 1),
        "rss_bytes_per_entry": round(r["rss_bytes_per_entry"], 1),
        "traced_bytes_per_entry": round(r["traced_bytes_per_entry"], 1),
        "process_peak_rss_mib": round(r["peak_rss_bytes"] / MIB, 1),
        "schedule_us": round(r["schedule_us"], 3),
        "cancel_us": round(r["cancel_us"], 3),
        "tick_idle_us": round(r["tick_idle_us"], 3),
        "tick_1000_due_ms": round(r["tick_1000_due_ms"], 3),
        "next_due_us": round(r["next_due_us"], 3),
        "jump_2h_ms": round(r["jump_2h_ms"], 1),
        "jump_2h_fired": r["jump_2h_fired"],
        "entries": r["entries"],
    }
