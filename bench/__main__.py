"""``python -m bench SCENARIO``: run a scenario ``--repeat`` times on a fresh server each time.

    python -m bench drain          [--agents 1]      [--per-agent 20000] [--procs 1]
    python -m bench reconnect      [--agents 1000]   [--per-agent 20]    [--procs 2]
    python -m bench storm          [--agents 10000]  [--per-agent 1]     [--procs 2]
    python -m bench idle           [--agents 10000]                      [--procs 2]
    python -m bench create         [--agents 10000]  [--per-agent 200]   [--procs 2]
    python -m bench hooks          [--per-agent 300]     (task.create with 0/1/5 after-hooks, one before-hook)
    python -m bench timers         [--agents 1000000]    (pending wheel entries)
    python -m bench hostile        [--only CASE,...]     (the worst single messages: tetherd's loop lag)
    python -m bench reports        [--agents 10000]  [--per-agent 1] [--minutes 2]  (state every 5 min + an alert a minute per agent; one repeat)
    python -m bench soak           [--agents 1000]   [--minutes 10] [--rate 200] [--ttl S]  (one repeat)
    python -m bench mqtt-drain | mqtt-reconnect      (Mosquitto + paho-mqtt, same workloads)
    python -m bench ws-drain | ws-reconnect | ws-storm | ws-idle   (raw-websockets baseline)
    python -m bench compare        [--only drain,reconnect,...]   (tether and its peers, ratios)
        common: [--repeat 3] [--window W] [--set KEY=VALUE] [--timeout S] [--arg-bytes B] [--json FILE] [--py-spy FILE]

Prints min / median / max of every figure over the repeats and writes a JSON document
(figures, every raw repeat, the command line, the machine) to ``--json`` or
``bench/results/<scenario>-<timestamp>.json``. Run it from the repository root.
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import sys
import time
from pathlib import Path
from typing import Any

from . import report
from .catalog import SCENARIOS
from .runs import FAILURES, RESULTS, announce, document, options_for, run_repeat


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _minutes(text: str) -> float:
    value = float(text)
    if not 0 < value <= 24 * 60:
        raise argparse.ArgumentTypeError(f"must be more than 0 and at most 1440, not {value:g}")
    return value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scenario", choices=[*sorted(SCENARIOS), "compare"])
    p.add_argument("--agents", type=_positive, help="simulated agents (timers: wheel entries)")
    p.add_argument("--per-agent", type=int, help="queued echo tasks per agent (drain 20000, reconnect 20)")
    p.add_argument("--repeat", type=_positive, help="runs, each on a fresh server (default 3; soak 1)")
    p.add_argument("--procs", type=_positive, help="client worker processes (drain 1, others 2)")
    p.add_argument("--window", type=_positive, help="tetherd's window setting (default: tetherd's own, 32)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="settings",
                   help="another tetherd.toml setting for the run, e.g. synchronous=normal (repeatable)")
    p.add_argument("--arg-bytes", type=int, help="approximate JSON size of each task's args (drain 200)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds the measured phase may take (300)")
    p.add_argument("--json", type=Path, metavar="FILE", help="where to write the results")
    p.add_argument("--py-spy", type=Path, metavar="FILE",
                   help="record tetherd with py-spy during the first repeat (.svg flamegraph, .txt collapsed "
                        "stacks, .json speedscope)")
    p.add_argument("--agent-concurrency", type=_positive, metavar="N",
                   help="commands each simulated agent runs at once (tether-agent --concurrency; default 4, "
                        "drain-c32 and reconnect-c32: 32)")
    p.add_argument("--py-spy-all", action="store_true",
                   help="with --py-spy: record the client worker processes too, each stack under its process")
    p.add_argument("--only", help="compare: the groups to run; hostile: the cases to run (comma-separated, default all)")
    p.add_argument("--minutes", type=_minutes,
                   help="soak: minutes tasks flow (default 10); reports: minutes measured (default 2)")
    p.add_argument("--rate", type=_positive, help="soak: tasks created per second (default 200)")
    p.add_argument("--ttl", type=_positive, help="soak: each task's ttl in seconds (default tetherd's, one week)")
    return p


def _toml_value(text: str) -> Any:
    """``64`` -> 64, ``2.5`` -> 2.5, ``true`` -> True, anything else stays a string."""
    if text in ("true", "false"):
        return text == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def raise_fd_limit(want: int = 65_536) -> tuple[int, int]:
    """Raise RLIMIT_NOFILE (inherited by the servers and the workers): to ``want`` if this
    process may raise its hard limit (root), else to the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
        except (ValueError, OSError):
            pass
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def settings_from(args: argparse.Namespace) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    for item in args.settings:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SystemExit(f"error: --set takes KEY=VALUE, not {item!r}")
        settings[key.strip()] = _toml_value(value.strip())
    if args.window is not None:
        settings["window"] = args.window
    return settings


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    limit = raise_fd_limit()
    started = time.strftime("%Y%m%d-%H%M%S")
    if args.repeat is None:
        args.repeat = SCENARIOS.get(args.scenario, {}).get("repeat", 3)
    if args.scenario == "compare":
        from .compare import run_compare

        return run_compare(args, settings_from(args), limit, started)
    name = args.scenario
    opts = options_for(name, args, settings_from(args), args.timeout)
    if args.py_spy_all:
        opts = dataclasses.replace(opts, profile_all=True)
    if name in ("drain", "drain-c32", "reconnect", "reconnect-c32", "storm", "ws-drain", "ws-reconnect", "ws-storm",
                "mqtt-drain", "mqtt-reconnect") and opts.per_agent < 1:
        print("error: --per-agent must be at least 1 for a delivery scenario", file=sys.stderr)
        return 2
    announce(name, opts, args.repeat, limit)
    repeats: list[dict[str, Any]] = []
    for i in range(args.repeat):
        try:
            repeats.append(run_repeat(name, opts, i, args.repeat, args.py_spy if i == 0 else None))
        except FAILURES as exc:
            print(f"repeat {i + 1}/{args.repeat} failed: {exc}", file=sys.stderr)
            return 1
    doc = document(name, opts, repeats, started, limit)
    print()
    print(report.table(doc["summary"], repeats))
    path = args.json or RESULTS / f"{name}-{started}.json"
    report.write_json(path, doc)
    print(f"\nwrote {path}")
    failed = [i + 1 for i, r in enumerate(repeats) if r.get("verdict") == "FAIL"]
    if failed:
        print(f"{name}: FAIL in repeat(s) {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
