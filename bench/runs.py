"""One scenario's repeats: options from the defaults and the command line, a repeat, the document."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from . import report
from .catalog import SCENARIOS, headline
from .fleet import FleetError
from .scenarios import BenchError, Options
from .tetherd import TetherdError

RESULTS = Path(__file__).resolve().parent / "results"
FAILURES = (BenchError, FleetError, TetherdError)
"""What a repeat raises when it could not be measured (the message says what was seen)."""


def options_for(name: str, args: argparse.Namespace | None = None, settings: dict[str, Any] | None = None,
                timeout: float = 300.0) -> Options:
    spec = SCENARIOS[name]

    def pick(attr: str, key: str) -> Any:
        value = getattr(args, attr, None) if args is not None else None
        return value if value is not None else spec[key]

    extra = {key: pick(key, key) for key in ("minutes", "rate", "ttl") if key in spec}  # soak's own
    if "cases" in spec:  # hostile's own
        extra["only"] = getattr(args, "only", None) or ""
    concurrency = getattr(args, "agent_concurrency", None) if args is not None else None
    extra["agent_concurrency"] = concurrency or spec.get("agent_concurrency", 4)  # 4: the agent's own default
    return Options(agents=pick("agents", "agents"), per_agent=pick("per_agent", "per_agent"),
                   procs=pick("procs", "procs"), settings=dict(settings or {}),
                   arg_bytes=pick("arg_bytes", "arg_bytes"), timeout=timeout, **extra)


def announce(name: str, opts: Options, repeat: int, limit: tuple[int, int]) -> None:
    soak = (f" minutes={opts.minutes:g} rate={opts.rate}/s ttl={opts.ttl or 'default'}" if "minutes" in SCENARIOS[name]
            else "")
    print(f"{name}: {SCENARIOS[name]['what']}\n  agents={opts.agents} per_agent={opts.per_agent} procs={opts.procs} "
          f"tetherd={opts.settings or 'defaults'} agent_concurrency={opts.agent_concurrency} arg_bytes={opts.arg_bytes}{soak} "
          f"repeat={repeat} nofile={limit[0]}",
          flush=True)


def run_repeat(name: str, opts: Options, index: int, repeat: int, profile: Path | None = None) -> dict[str, Any]:
    """One repeat; raises one of :data:`FAILURES` if it could not be measured."""
    run_opts = opts if profile is None else Options(**{**opts.__dict__, "profile": profile})
    t = time.monotonic()
    figures: dict[str, Any] = SCENARIOS[name]["run"](run_opts)
    print(f"  {name} repeat {index + 1}/{repeat}: " + " ".join(f"{k}={figures.get(k)}" for k in headline(name))
          + (f" others_cpu_percent={figures['others_cpu_percent']}" if "others_cpu_percent" in figures else "")
          + f" (whole repeat {time.monotonic() - t:.1f} s)", flush=True)
    return figures


def document(name: str, opts: Options, repeats: list[dict[str, Any]], started: str,
             limit: tuple[int, int]) -> dict[str, Any]:
    return {
        "scenario": name,
        "what": SCENARIOS[name]["what"],
        "started": started,
        "command": report.command_line(),
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in opts.__dict__.items()},
        "summary": report.summarise(repeats),
        "repeats": repeats,
        "machine": report.machine(),
        "nofile_limit": list(limit),
    }
