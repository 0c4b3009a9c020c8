"""``python -m bench SCENARIO``: run a scenario ``--repeat`` times on a fresh tetherd each time.

    python -m bench drain      [--agents 1]    [--per-agent 20000] [--procs 1]
    python -m bench reconnect  [--agents 1000] [--per-agent 20]    [--procs 2]
    python -m bench idle       [--agents 1000]                     [--procs 2]
        common: [--repeat 3] [--window W] [--set KEY=VALUE] [--timeout S] [--arg-bytes B] [--json FILE] [--py-spy FILE]

Prints min / median / max of every figure over the repeats and writes a JSON document
(figures, every raw repeat, the command line, the machine) to ``--json`` or
``bench/results/<scenario>-<timestamp>.json``. Run it from the repository root.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path
from typing import Any

from . import report
from .fleet import FleetError
from .scenarios import HEADLINES, SCENARIOS, BenchError, Options
from .tetherd import TetherdError

RESULTS = Path(__file__).resolve().parent / "results"


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scenario", choices=sorted(SCENARIOS))
    p.add_argument("--agents", type=_positive, help="simulated agents (drain 1, reconnect/idle 1000)")
    p.add_argument("--per-agent", type=int, help="queued echo tasks per agent (drain 20000, reconnect 20)")
    p.add_argument("--repeat", type=_positive, default=3, help="runs, each on a fresh tetherd (default 3)")
    p.add_argument("--procs", type=_positive, help="agent worker processes (drain 1, reconnect/idle 2)")
    p.add_argument("--window", type=_positive, help="tetherd's window setting (default: tetherd's own, 10)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="settings",
                   help="another tetherd.toml setting for the run, e.g. synchronous=normal (repeatable)")
    p.add_argument("--arg-bytes", type=int, help="approximate JSON size of each task's args (drain 200)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds the measured phase may take (300)")
    p.add_argument("--json", type=Path, metavar="FILE", help="where to write the results")
    p.add_argument("--py-spy", type=Path, metavar="FILE",
                   help="record tetherd with py-spy during the first repeat (.svg flamegraph, .txt collapsed "
                        "stacks, .json speedscope)")
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


def _raise_fd_limit() -> tuple[int, int]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by tetherd and the workers
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    spec = SCENARIOS[args.scenario]
    limit = _raise_fd_limit()
    settings: dict[str, Any] = {}
    for item in args.settings:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            print(f"error: --set takes KEY=VALUE, not {item!r}", file=sys.stderr)
            return 2
        settings[key.strip()] = _toml_value(value.strip())
    if args.window is not None:
        settings["window"] = args.window
    opts = Options(
        agents=args.agents if args.agents is not None else spec["agents"],
        per_agent=args.per_agent if args.per_agent is not None else spec["per_agent"],
        procs=args.procs if args.procs is not None else spec["procs"],
        settings=settings,
        arg_bytes=args.arg_bytes if args.arg_bytes is not None else spec["arg_bytes"],
        timeout=args.timeout,
    )
    if not args.scenario.endswith("idle") and opts.per_agent < 1:
        print("error: --per-agent must be at least 1 for a delivery scenario", file=sys.stderr)
        return 2
    print(f"{args.scenario}: {spec['what']}\n  agents={opts.agents} per_agent={opts.per_agent} procs={opts.procs} "
          f"tetherd={settings or 'defaults'} arg_bytes={opts.arg_bytes} repeat={args.repeat} nofile={limit[0]}",
          flush=True)
    repeats: list[dict[str, Any]] = []
    started = time.strftime("%Y%m%d-%H%M%S")
    for i in range(args.repeat):
        run_opts = opts if i > 0 or args.py_spy is None else Options(**{**opts.__dict__, "profile": args.py_spy})
        t = time.monotonic()
        try:
            figures = spec["run"](run_opts)
        except (BenchError, FleetError, TetherdError) as exc:
            print(f"repeat {i + 1}/{args.repeat} failed: {exc}", file=sys.stderr)
            return 1
        repeats.append(figures)
        headline = HEADLINES[args.scenario.removeprefix("ws-")]
        print(f"  repeat {i + 1}/{args.repeat}: " + " ".join(f"{k}={figures[k]}" for k in headline)
              + f" (whole repeat {time.monotonic() - t:.1f} s)", flush=True)
    summary = report.summarise(repeats)
    print()
    print(report.table(summary, repeats))
    document = {
        "scenario": args.scenario,
        "what": spec["what"],
        "started": started,
        "command": report.command_line(),
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in opts.__dict__.items()},
        "summary": summary,
        "repeats": repeats,
        "machine": report.machine(),
        "nofile_limit": list(limit),
    }
    path = args.json or RESULTS / f"{args.scenario}-{started}.json"
    report.write_json(path, document)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
