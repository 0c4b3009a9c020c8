"""``tetherctl hooks``: automation hooks (issue 20). Its parser, its plan (the ``hook.*``
method each action calls) and its renderers; :mod:`.parser`, :mod:`.plan` and
:mod:`.results` bind them (``PLANS``, ``RENDERERS``) like their own."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

import msgspec

from tether.protocol import flags, methods
from tether.protocol.hooks import DEFAULT_TIMEOUT, MAX_TIMEOUT, TRIGGERS, HookRunView, HookView

from .client import EXIT_OK, ConsoleError
from .render import fmt_time, render_table, visible

EXIT_VETOED = 1
"""``hooks test``: the hook failed, timed out or vetoed."""


def add_parser(command: Callable[..., argparse.ArgumentParser],
               action: Callable[..., argparse.ArgumentParser]) -> None:
    triggers = "\n".join(f"  {t.name:22} {t.summary}" for t in TRIGGERS.values())
    group = command(
        "hooks", "automation hooks: add, list, show, enable, disable, rm, test, runs, fingerprint",
        "Automation hooks (after Check Point's SmartTasks): a trigger plus an action. A before-trigger "
        "(before-task, before-enroll) runs inline and may veto its operation: the operator sees the hook's "
        "message. After-triggers notify from a persistent outbox (retried with backoff, delivered at least "
        "once, also after a restart). Actions: a script of <data-dir>/scripts/, an HTTPS POST, an email.",
        "tetherctl hooks add audit --trigger after-task --url https://hooks.example:8443/tether "
        "--fingerprint SHA256 --secret S",
        "tetherctl hooks add gate --trigger before-task --script check-task --on-timeout fail-closed",
        "tetherctl hooks runs audit", group=True)
    ops = group.add_subparsers(dest="op", metavar="ACTION", required=True)
    p = action(ops, "add", "add a hook",
               "tetherctl hooks add audit --trigger after-task --url https://127.0.0.1:8443/ --fingerprint SHA256",
               "tetherctl hooks add mail --trigger after-enroll --email ops@example.com --subject 'enrolled "
               "{agent.hostname}'")
    p.description = f"Add a hook. Triggers:\n{triggers}"
    p.add_argument("name", metavar="NAME", help="unique, case-sensitive: letters, digits and . _ -")
    p.add_argument("--trigger", required=True, choices=list(TRIGGERS), metavar="TRIGGER",
                   help=f"one of: {', '.join(TRIGGERS)}")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--script", metavar="NAME",
                      help="run <data-dir>/scripts/NAME (a name, not a path) with the payload as base64 JSON")
    what.add_argument("--url", metavar="URL", help="POST the JSON payload to this https:// URL")
    what.add_argument("--email", metavar="TO", action="append",
                      help="send an email to TO (repeat for more recipients) through tetherd's SMTP server")
    p.add_argument("--fingerprint", metavar="SHA256",
                   help="trust the web server by its certificate's SHA-256 (tetherctl hooks fingerprint URL)")
    p.add_argument("--secret", metavar="S", help="shared secret: X-Tether-Shared-Secret, and the key of "
                                                 "X-Tether-Signature (never shown back)")
    p.add_argument("--subject", metavar="TEXT", help="email subject; {key.sub} is the payload's value there")
    p.add_argument("--body", metavar="TEXT", help="email body, templated like --subject (default: the payload)")
    p.add_argument("--data", metavar="JSON", help="a JSON object merged into the payload (custom data)")
    p.add_argument("--timeout", type=flags.duration, default=DEFAULT_TIMEOUT, metavar="DURATION",
                   help=f"{flags.DURATION} (default {DEFAULT_TIMEOUT:g}s, at most {MAX_TIMEOUT:g}s)")
    p.add_argument("--on-timeout", choices=("fail-open", "fail-closed"), default="fail-open",
                   help="a before-hook that times out or fails: let the operation through (default) or veto it")
    p.add_argument("--tag", action="append", default=[], metavar="T", help="a tag of the hook (repeatable)")
    p.add_argument("--description", default="", metavar="D")
    p.add_argument("--disabled", action="store_true", help="add it switched off")
    action(ops, "list", "list hooks", "tetherctl hooks list")
    for op, summary in (("show", "show a hook (never its secret), its pending runs and its last run"),
                        ("enable", "switch a hook on"), ("disable", "switch a hook off"),
                        ("rm", "remove a hook, its queued runs and its records"),
                        ("test", "fire a hook now with a sample payload and print the outcome (exit 1 if it "
                                 "failed, timed out or vetoed)")):
        action(ops, op, summary, f"tetherctl hooks {op} audit").add_argument("name", metavar="NAME")
    p = action(ops, "runs", "a hook's runs, newest first (trigger, start, duration, outcome, message)",
               "tetherctl hooks runs audit --limit 50")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--limit", type=flags.positive_int, default=20, help="at most this many (default 20)")
    p = action(ops, "fingerprint", "print the SHA-256 fingerprint of the certificate an HTTPS server shows tetherd",
               "tetherctl hooks fingerprint https://127.0.0.1:8443")
    p.add_argument("url", metavar="URL")


_BY_NAME = {"list": methods.HOOK_LIST, "show": methods.HOOK_GET, "enable": methods.HOOK_ENABLE,
            "disable": methods.HOOK_DISABLE, "rm": methods.HOOK_RM, "test": methods.HOOK_TEST}


def plan(args: argparse.Namespace) -> tuple[methods.Method, dict[str, Any]]:
    if args.op == "list":
        return methods.HOOK_LIST, {}
    if args.op == "runs":
        return methods.HOOK_RUNS, {"name": args.name, "limit": args.limit}
    if args.op == "fingerprint":
        return methods.HOOK_FINGERPRINT, {"url": args.url}
    if args.op != "add":
        return _BY_NAME[args.op], {"name": args.name}
    params: dict[str, Any] = {"name": args.name, "trigger": args.trigger, "timeout": args.timeout,
                              "on_timeout": args.on_timeout, "tags": args.tag, "description": args.description,
                              "enabled": not args.disabled}
    for key in ("script", "url", "email", "fingerprint", "secret", "subject", "body"):
        if getattr(args, key) is not None:
            params[key] = getattr(args, key)
    if args.data is not None:
        try:
            params["data"] = json.loads(args.data)
        except json.JSONDecodeError as exc:
            raise ConsoleError(f"--data is not valid JSON: {exc}") from None
    return methods.HOOK_ADD, params


# -- what is printed -------------------------------------------------------------------------


def _hook(result: Any) -> str:
    h = msgspec.convert(result, HookView)
    lines = [f"hook {h.name} ({'enabled' if h.enabled else 'disabled'})",
             f"  trigger:     {h.trigger}", f"  action:      {h.action} {h.target}",
             f"  timeout:     {h.timeout:g} s, {h.on_timeout}"]
    if h.fingerprint:
        lines.append(f"  fingerprint: {h.fingerprint}")
    if h.action == "web":
        lines.append(f"  secret:      {'set (never shown)' if h.secret_set else 'none'}")
    if h.subject:
        lines.append(f"  subject:     {h.subject}")
    if h.data:
        lines.append(f"  data:        {json.dumps(h.data, sort_keys=True)}")
    if h.tags:
        lines.append(f"  tags:        {', '.join(h.tags)}")
    if h.description:
        lines.append(f"  description: {h.description}")
    lines.append(f"  pending:     {h.pending}")
    if h.last_run is not None:
        r = h.last_run
        lines.append(f"  last run:    {fmt_time(r.started_at)} {r.outcome}" + (f": {r.message}" if r.message else ""))
    return "\n".join(visible(line) for line in lines)


def show_hook(result: Any, args: argparse.Namespace) -> int:
    print(_hook(result), file=args.stdout)
    return EXIT_OK


def show_hooks(result: Any, args: argparse.Namespace) -> int:
    hooks = msgspec.convert(result, list[HookView])
    if not hooks:
        print("no hooks (add one: tetherctl hooks add NAME --trigger T --script|--url|--email ...)", file=args.stdout)
        return EXIT_OK
    rows = [(h.name, h.trigger, f"{h.action} {h.target}", "on" if h.enabled else "off", h.pending) for h in hooks]
    print(render_table(("NAME", "TRIGGER", "ACTION", "ENABLED", "PENDING"), rows), file=args.stdout)
    return EXIT_OK


def show_removed(result: Any, args: argparse.Namespace) -> int:
    dropped = result.get("pending_dropped", 0) if isinstance(result, dict) else 0
    print(visible(f"hook {args.name!r} removed ({dropped} queued run(s) dropped)"), file=args.stdout)
    return EXIT_OK


def _run_line(r: HookRunView) -> str:
    return f"{r.outcome}" + (f": {r.message}" if r.message else "") + f" ({r.duration:.2f} s)"


def show_test(result: Any, args: argparse.Namespace) -> int:
    run = msgspec.convert(result, HookRunView)
    print(visible(f"hook {run.hook} ({run.trigger}, sample payload): {_run_line(run)}"), file=args.stdout)
    return EXIT_OK if run.outcome == "ok" else EXIT_VETOED


def show_runs(result: Any, args: argparse.Namespace) -> int:
    runs = msgspec.convert(result, list[HookRunView])
    if not runs:
        print(f"hook {args.name} has not run yet", file=args.stdout)
        return EXIT_OK
    rows = [(fmt_time(r.started_at), r.trigger + (" (test)" if r.test else ""), f"{r.duration:.2f}", r.attempt,
             r.outcome, r.message) for r in runs]
    print(render_table(("STARTED", "TRIGGER", "SECONDS", "ATTEMPT", "OUTCOME", "MESSAGE"), rows), file=args.stdout)
    return EXIT_OK


def show_fingerprint(result: Any, args: argparse.Namespace) -> int:
    print(result["sha256"], file=args.stdout)
    print(visible(f"SHA-256 of the certificate {result['url']} shows; pin it with --fingerprint"), file=args.stderr)
    return EXIT_OK


RENDERERS: list[tuple[tuple[methods.Method, ...], Callable[[Any, argparse.Namespace], int]]] = [
    ((methods.HOOK_ADD, methods.HOOK_GET, methods.HOOK_ENABLE, methods.HOOK_DISABLE), show_hook),
    ((methods.HOOK_LIST,), show_hooks), ((methods.HOOK_RM,), show_removed), ((methods.HOOK_TEST,), show_test),
    ((methods.HOOK_RUNS,), show_runs), ((methods.HOOK_FINGERPRINT,), show_fingerprint),
]
PLAN_METHODS = (methods.HOOK_ADD, methods.HOOK_LIST, methods.HOOK_GET, methods.HOOK_ENABLE, methods.HOOK_DISABLE,
                methods.HOOK_RM, methods.HOOK_TEST, methods.HOOK_RUNS, methods.HOOK_FINGERPRINT)
