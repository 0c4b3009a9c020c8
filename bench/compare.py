"""``python -m bench compare``: tether and its peers side by side, in one run, as ratios.

Scenarios are run in groups; within a group the repeats are interleaved (tether, Mosquitto,
baseline, tether, ...), so a change in the machine's load hits every side alike. Each
ratio divides the medians (tether / peer); the targets are the issue's (2 cores).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

from . import report
from .runs import FAILURES, RESULTS, announce, document, options_for, run_repeat

GROUPS: dict[str, tuple[str, ...]] = {
    "drain": ("drain", "drain-c32", "mqtt-drain", "ws-drain"),
    "reconnect": ("reconnect", "reconnect-c32", "mqtt-reconnect", "ws-reconnect"),
    "storm": ("storm", "ws-storm"),
    "idle": ("idle", "ws-idle"),
    "create": ("create",),
    "timers": ("timers",),
}

RATIOS: tuple[tuple[str, str, str, str, float | None, str], ...] = (
    # tether, peer, figure, comparison, target, what
    ("drain", "mqtt-drain", "deliveries_per_s", ">=", 1.0, "drain deliveries/s, tether / Mosquitto"),
    ("drain-c32", "mqtt-drain", "deliveries_per_s", ">=", 1.0,
     "drain, agent --concurrency 32, deliveries/s, tether / Mosquitto"),
    ("drain", "ws-drain", "deliveries_per_s", "", None, "drain deliveries/s, tether / raw websockets"),
    ("reconnect", "mqtt-reconnect", "deliveries_per_s", ">=", 1.0, "reconnect 1,000 x 20 deliveries/s, tether / Mosquitto"),
    ("reconnect-c32", "mqtt-reconnect", "deliveries_per_s", ">=", 1.0,
     "reconnect, agents --concurrency 32, deliveries/s, tether / Mosquitto"),
    ("reconnect", "ws-reconnect", "deliveries_per_s", "", None, "reconnect deliveries/s, tether / raw websockets"),
    ("reconnect", "mqtt-reconnect", "first_task_p99_ms", "", None, "reconnect first task p99, tether / Mosquitto"),
    ("drain", "mqtt-drain", "server_cpu_us_per_delivery", "", None, "drain server CPU per delivery (us), tetherd / Mosquitto"),
    ("reconnect", "mqtt-reconnect", "server_cpu_us_per_delivery", "", None,
     "reconnect server CPU per delivery (us), tetherd / Mosquitto"),
    ("storm", "ws-storm", "sessions_per_s", ">=", 0.5, "storm 10,000 sessions/s, tether / raw websockets"),
    ("idle", "ws-idle", "rss_per_session_kib", "<=", 2.5, "idle 10,000 RSS per session, tether / raw websockets"),
)
ABSOLUTES: tuple[tuple[str, str, str, float, str], ...] = (
    ("storm", "errors", "==", 0, "storm 10,000: errors"),
    ("storm", "agents_served", ">=", 10_000, "storm 10,000: agents served"),
    ("create", "fanout_committed_and_pushed_s", "<=", 2.0, "fan-out to 10,000 online: committed and pushed, s"),
    ("create", "single_tasks_per_s", "", 0, "single-agent task.create per second"),
    ("timers", "wheel_rss_mib", "<=", 200.0, "timers 1,000,000: wheel RSS, MiB"),
)


def _median(repeats: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in repeats if isinstance(r.get(key), int | float)]
    return statistics.median(values) if values else None


def _meets(value: float | None, op: str, target: float | None) -> str:
    if value is None:
        return "n/a"
    if not op or target is None:
        return ""
    ok = {">=": value >= target, "<=": value <= target, "==": value == target}[op]
    return "ok" if ok else "MISSED"


def ratios(runs: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for mine, peer, key, op, target, what in RATIOS:
        if not runs.get(mine) or not runs.get(peer):
            continue
        a, b = _median(runs[mine], key), _median(runs[peer], key)
        ratio = round(a / b, 3) if a is not None and b else None
        rows.append({"what": what, "figure": key, "tether": a, "peer": b, "peer_scenario": peer, "ratio": ratio,
                     "target": f"{op} {target:g}" if op and target is not None else "", "verdict": _meets(ratio, op, target),
                     "others_cpu_percent": {s: _median(runs[s], "others_cpu_percent") for s in (mine, peer)}})
    for scenario, key, op, target, what in ABSOLUTES:
        if not runs.get(scenario):
            continue
        value = _median(runs[scenario], key)
        rows.append({"what": what, "figure": key, "tether": value, "peer": None, "peer_scenario": None,
                     "ratio": None, "target": f"{op} {target:g}" if op else "", "verdict": _meets(value, op, target),
                     "others_cpu_percent": {scenario: _median(runs[scenario], "others_cpu_percent")}})
    return rows


def _num(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:,.3g}" if abs(v) < 10 else f"{v:,.1f}"


def ratio_table(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'':<66} {'tether':>10} {'peer':>10} {'ratio':>7}  {'target':>7}  verdict"]
    for r in rows:
        lines.append(f"{r['what']:<66} {_num(r['tether']):>10} {_num(r['peer']):>10} {_num(r['ratio']):>7}  "
                     f"{r['target']:>7}  {r['verdict']}")
    return "\n".join(lines)


def run_compare(args: argparse.Namespace, settings: dict[str, Any], limit: tuple[int, int], started: str) -> int:
    groups = list(GROUPS) if not args.only else [g.strip() for g in args.only.split(",") if g.strip()]
    unknown = [g for g in groups if g not in GROUPS]
    if unknown:
        print(f"error: unknown group(s) {', '.join(unknown)} (known: {', '.join(GROUPS)})", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    runs: dict[str, list[dict[str, Any]]] = {}
    failures: dict[str, list[str]] = {}
    docs: dict[str, Any] = {}
    for group in groups:
        members = GROUPS[group]
        opts = {name: options_for(name, None, settings if not name.startswith(("ws-", "mqtt-")) else {},
                                  args.timeout) for name in members}
        for name in members:
            announce(name, opts[name], args.repeat, limit)
        for i in range(args.repeat):
            for name in members:
                try:
                    runs.setdefault(name, []).append(run_repeat(name, opts[name], i, args.repeat))
                except FAILURES as exc:
                    print(f"  {name} repeat {i + 1}/{args.repeat} failed: {exc}", file=sys.stderr)
                    failures.setdefault(name, []).append(str(exc))
        for name in members:
            if runs.get(name):
                docs[name] = document(name, opts[name], runs[name], started, limit)
                del docs[name]["machine"]  # once, at the top
    rows = ratios(runs)
    print()
    for name, doc in docs.items():
        print(f"== {name}")
        print(report.table(doc["summary"], []))
        print()
    print(f"== tether / peers (medians of {args.repeat}; whole compare {time.monotonic() - t0:.0f} s)")
    print(ratio_table(rows))
    path = args.json or RESULTS / f"compare-{started}.json"
    report.write_json(path, {
        "scenario": "compare",
        "started": started,
        "command": report.command_line(),
        "repeat": args.repeat,
        "groups": groups,
        "ratios": rows,
        "failures": failures,
        "scenarios": docs,
        "machine": report.machine(),
        "nofile_limit": list(limit),
        "seconds": round(time.monotonic() - t0, 1),
    })
    print(f"\nwrote {path}")
    return 1 if failures else 0


__all__ = ["GROUPS", "ratio_table", "ratios", "run_compare"]
