"""Results: machine facts, min / median / max over repeats, the table, the JSON file."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil

import tether

from .mosquitto import mosquitto_version

PACKAGES = ("tether", "websockets", "msgspec", "aiosqlite", "uvloop", "anyio", "prometheus-client", "psutil",
            "paho-mqtt")
QUIET = frozenset({"monotonic"})
"""Raw fields kept in the JSON but left out of the printed table."""


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git() -> dict[str, Any]:
    """Which tether was measured: the package imported (PYTHONPATH may point at another
    checkout) and, if it lives in a git work tree, its commit and uncommitted changes."""
    root = Path(tether.__file__).resolve().parent.parent

    def run(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10).stdout.rstrip()
        except (OSError, subprocess.TimeoutExpired):
            return ""

    inside = run("rev-parse", "--show-toplevel")
    if not inside or Path(inside).resolve() != root:
        return {"tether_path": str(root), "commit": None, "tether_files_changed": None}
    changed = run("status", "--porcelain", "--", "tether")
    return {"tether_path": str(root), "commit": run("rev-parse", "HEAD") or None,
            "tether_files_changed": [line[3:] for line in changed.splitlines()]}


def machine() -> dict[str, Any]:
    return {
        "cpu_model": _cpu_model(),
        "cpus_logical": os.cpu_count(),
        "cpus_physical": psutil.cpu_count(logical=False),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "kernel": platform.release(),
        "os": platform.platform(),
        "versions": {name: _version(name) for name in PACKAGES},
        "mosquitto": mosquitto_version(),
        "sqlite": sqlite3.sqlite_version,
        "git": _git(),
    }


def summarise(repeats: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """min / median / max of every numeric figure present in every repeat."""
    summary: dict[str, dict[str, float]] = {}
    for key, first in repeats[0].items():
        if isinstance(first, bool) or not isinstance(first, int | float):
            continue
        values = [r.get(key) for r in repeats]
        if any(v is not None and (isinstance(v, bool) or not isinstance(v, int | float)) for v in values):
            continue
        nums = [float(v) for v in values if v is not None]
        summary[key] = {"min": min(nums), "median": statistics.median(nums), "max": max(nums)}
    return summary


def _fmt(value: float) -> str:
    if value == int(value) and abs(value) >= 100:
        return f"{int(value):,}"
    return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.2f}"


def table(summary: dict[str, dict[str, float]], repeats: list[dict[str, Any]]) -> str:
    width = max(len(k) for k in summary) if summary else 10
    lines = [f"{'figure'.ljust(width)}  {'min':>12}  {'median':>12}  {'max':>12}"]
    for key, s in summary.items():
        lines.append(f"{key.ljust(width)}  {_fmt(s['min']):>12}  {_fmt(s['median']):>12}  {_fmt(s['max']):>12}")
    for i, r in enumerate(repeats):
        notes = {k: v for k, v in r.items() if isinstance(v, dict) and v and k not in QUIET}
        if notes:
            lines.append(f"repeat {i + 1}: " + "; ".join(f"{k}: {json.dumps(v, sort_keys=True)}"
                                                         for k, v in notes.items()))
    return "\n".join(lines)


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n")


def command_line() -> list[str]:
    return [Path(sys.executable).name, "-m", "bench", *sys.argv[1:]]
