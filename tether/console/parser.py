"""tetherctl's command line: its commands, their flags and their ``--help``.

Every command has a summary, a description, examples, and the exit codes and environment
variables it reads in its ``--help`` (a test checks each). Flags shared with ``tetherd``
(``key create``, ``token create``, durations) come from :mod:`tether.protocol.flags`, so
they are spelt, parsed and explained one way.
"""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Callable
from typing import Any

import tether
from tether.protocol import console as rpc
from tether.protocol import flags
from tether.protocol.lifecycle import FILTERS, DeliveryState
from tether.protocol.tags import RULE

from . import hooks

EXIT_CODES = """\
exit codes:
  0    ok
  2    bad input, or an error answered by the daemon
  3    cannot connect, or the daemon refused the handshake (e.g. unauthorized)
"""
WAIT_EXIT_CODES = """\
exit codes:
  0    every delivery is done
  1    a delivery failed, expired or was cancelled
  2    bad input, or an error answered by the daemon
  3    cannot connect, or the daemon refused the handshake (e.g. unauthorized)
  124  --timeout passed first (some delivery has not finished)
"""
ENVIRONMENT = """\
environment:
  TETHER_URL    default for --server (else ws://127.0.0.1:8765)
  TETHER_TOKEN  default for --token
  TETHER_CA     default for --ca
"""
EXIT_CODES_HELP = WAIT_EXIT_CODES.replace("every delivery is done", "ok (wait: every delivery is done)") + \
    "\n" + ENVIRONMENT
"""The top-level --help's epilog: every exit code and variable; each command shows its own."""


def _epilog(*examples: str, codes: str = EXIT_CODES) -> str:
    """A command's --help epilog: its examples, its exit codes, the environment it reads."""
    return f"{flags.examples(*examples)}\n{codes}\n{ENVIRONMENT}"


def _priority(text: str) -> int:
    if text in rpc.PRIORITIES:
        return rpc.PRIORITIES[text]
    if text.isdigit() and int(text) in rpc.PRIORITY_NAMES:
        return int(text)
    raise argparse.ArgumentTypeError(f"invalid priority {text!r}: use low, medium, high or urgent (or 0-3)")


def _add_common(p: argparse.ArgumentParser, *, top: bool) -> None:
    # On the top parser these carry the defaults; on subcommands they are SUPPRESSed so
    # `tetherctl agents --server URL` and `tetherctl --server URL agents` both work.
    default: Any = argparse.SUPPRESS
    p.add_argument("--server", metavar="URL", help="daemon URL, ws:// or wss:// (env TETHER_URL)",
                   **({"default": None} if top else {"default": default}))
    p.add_argument("--token", help="admin token (env TETHER_TOKEN)",
                   **({"default": None} if top else {"default": default}))
    p.add_argument("--ca", metavar="FILE",
                   help="PEM CA certificates to trust for a wss:// server instead of the system's store "
                        "(env TETHER_CA)", **({"default": None} if top else {"default": default}))
    p.add_argument("--json", action="store_true", help="print the daemon's raw result as JSON",
                   **({"default": False} if top else {"default": default}))


def build_parser() -> argparse.ArgumentParser:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="tetherctl",
        description="The admin console of tetherd: agents, tags, tasks and recurring schedules.",
        epilog=EXIT_CODES_HELP,
        formatter_class=formatter,
    )
    parser.add_argument("--version", action="version", version=f"tetherctl {tether.__version__}")
    _add_common(parser, top=True)
    sub = parser.add_subparsers(dest="cmd", metavar="COMMAND", required=True)

    def command(name: str, summary: str, description: str, *examples: str, codes: str = EXIT_CODES,
                group: bool = False) -> argparse.ArgumentParser:
        """A command; ``group``: one whose ACTIONs are the commands (its help: examples only)."""
        p = sub.add_parser(name, help=summary, description=textwrap.fill(description, 88),
                           epilog=flags.examples(*examples) if group else _epilog(*examples, codes=codes),
                           formatter_class=formatter)
        if not group:
            _add_common(p, top=False)
        return p

    p = command("agents", "list enrolled agents",
                "List enrolled agents: id, hostname, platform, online, last seen, tags, and a note for a "
                "possible clone (enrolled without proof from another agent's machine UUID: approve, merge or "
                "remove it with `tetherctl agent`). With --json, tags are a list.",
                "tetherctl agents", "tetherctl agents --tag web --online --json", "tetherctl agents --stale 1d")
    p.add_argument("--tag", help="only agents carrying this tag")
    seen = p.add_mutually_exclusive_group()
    seen.add_argument("--online", action="store_true", help="only agents with an open session")
    seen.add_argument("--offline", action="store_true", help="only agents without one")
    seen.add_argument("--stale", metavar="DURATION", type=flags.duration,
                      help=f"only agents offline and not seen for at least this long (or never): {flags.DURATION}")
    p.add_argument("--all", action="store_true",
                   help="also agents revoked, replaced (their machine UUID changed), removed or merged into another")

    p = command("tag", "add a tag to an agent or remove one",
                "Add a tag to an agent or remove it. Tag tasks still within their ttl reach an "
                "agent that is tagged later.",
                "tetherctl tag add AGENT_ID web", "tetherctl tag rm AGENT_ID web")
    p.add_argument("op", choices=("add", "rm"), help="add or rm")
    p.add_argument("agent_id", metavar="AGENT_ID")
    p.add_argument("tag", metavar="TAG", help=RULE)

    p = command("task", "queue a task for an agent, a tag or every agent",
                "Queue a task. Offline agents get it when they connect, until the ttl ends. "
                "COMMAND is a command line such as \"file_get --path /etc/hosts\": "
                "--name value gives {\"name\": \"value\"}, a bare --flag gives true, "
                "positionals go to \"argv\". Prints the task id.",
                "tetherctl task os_version --tag web",
                "tetherctl task \"file_get --path /etc/hosts\" --agent AGENT_ID --ttl 1h --priority high")
    _add_task_spec(p, each="")

    p = command("tasks", "list deliveries (pending ones by default)",
                "List deliveries, one line per agent and task, pending ones unless --state says otherwise.",
                "tetherctl tasks --tag web", "tetherctl tasks --agent AGENT_ID --state all --limit 50")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--agent", metavar="ID", help="only this agent's deliveries")
    target.add_argument("--tag", metavar="T", help="only deliveries of agents that carry this tag")
    target.add_argument("--selector", metavar="EXPR", help="only deliveries of agents a LimaCharlie selector matches")
    p.add_argument("--state", choices=[*(s.value for s in DeliveryState), *FILTERS],
                   help="a delivery state, pending (default: not finished) or all")
    p.add_argument("--limit", type=flags.positive_int, metavar="N", help="at most N rows (default 1000)")

    p = command("show", "show a task and each of its deliveries",
                "Show a task and each delivery: state, run, timestamps (UTC), result or error.",
                "tetherctl show 12", "tetherctl show 12 --history --json")
    p.add_argument("task_id", metavar="TASK_ID", type=flags.positive_int)
    p.add_argument("--history", action="store_true",
                   help="each delivery's history: every run of a polling command, then how it ended")

    p = command("wait", "wait until every delivery of a task has finished",
                "Wait until every delivery of a task has finished, printing progress on stderr. A polling "
                "command has not finished while a next run is scheduled. Exit 0 if all are done, 1 if any "
                "failed (a polling sequence that timed out failed), expired or was cancelled, 124 if --timeout "
                "passed first (and says so on stderr).",
                "tetherctl wait 12", "tetherctl wait 12 --timeout 5m || tetherctl show 12", codes=WAIT_EXIT_CODES)
    p.add_argument("task_id", metavar="TASK_ID", type=flags.positive_int)
    p.add_argument("--timeout", metavar="DURATION", type=flags.duration,
                   help=f"give up after DURATION: {flags.DURATION} (default: wait forever)")

    p = command("watch", "show a task's deliveries live, with each command's progress",
                "Show a task's deliveries as they change, with each running command's progress (the "
                "scan command reports percent, files done and the current path at most once a second): on "
                "a terminal one line per agent with a progress bar, redrawn in place; otherwise one line per "
                "change. Ends when every delivery has finished, with wait's exit codes. With --json, one "
                "JSON object per event ({\"topic\", \"data\"}), then the task.",
                "tetherctl watch 12", "tetherctl watch 12 --timeout 10m --json", codes=WAIT_EXIT_CODES)
    p.add_argument("task_id", metavar="TASK_ID", type=flags.positive_int)
    p.add_argument("--timeout", metavar="DURATION", type=flags.duration,
                   help=f"give up after DURATION: {flags.DURATION} (default: watch until finished)")

    p = command("alerts", "list the distinct alerts agents raised, or show or acknowledge one",
                "Alerts are deduplicated by tetherd (a checksum over tetherd's alert_checksum fields, by "
                "default agent, kind, name, path and hash): each distinct alert is one line with how often it "
                "came, when first and last, and its latest copy. Last seen first. Alerts an agent sent over "
                "its rate limit are counted, not stored: the total per agent is printed below. "
                "`alerts show ID` shows one with its details; `alerts ack ID` acknowledges it (copies that "
                "come later show as new since the ack).",
                "tetherctl alerts", "tetherctl alerts --agent AGENT_ID --since 1h --kind scan",
                "tetherctl alerts show 7", "tetherctl alerts ack 7")
    p.add_argument("op", nargs="?", choices=("show", "ack"), help="show or ack one alert (default: list)")
    p.add_argument("alert_id", nargs="?", metavar="ID", type=flags.positive_int)
    p.add_argument("--agent", metavar="ID", help="only alerts whose latest copy came from this agent")
    p.add_argument("--since", metavar="DURATION", type=flags.duration,
                   help=f"only alerts seen in the last DURATION: {flags.DURATION}")
    p.add_argument("--kind", metavar="K", help="only alerts of this kind (scan, script ...)")
    p.add_argument("--limit", type=flags.positive_int, metavar="N", help="at most N alerts (default 100)")

    p = command("untask", "cancel a task, or everything pending for an agent or a tag",
                "Cancel queued deliveries; agents already holding one are told to cancel it. "
                "Prints what it changed: the deliveries cancelled, and the tasks closed (they reach no new agent).",
                "tetherctl untask 12", "tetherctl untask --tag web")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("task_id", metavar="TASK_ID", type=flags.positive_int, nargs="?", help="one task")
    target.add_argument("--agent", metavar="ID", help="everything pending for this agent")
    target.add_argument("--tag", metavar="T",
                        help="everything pending for agents that carry this tag, and tag tasks aimed at it")
    target.add_argument("--selector", metavar="EXPR",
                        help="everything pending for agents a selector matches, and tasks with that selector")

    p = command("action", "send a LimaCharlie-style action object",
                "Send a LimaCharlie reliable-tasking action, e.g. "
                "'{\"action\":\"task\",\"task\":\"os_version\",\"tag\":\"web\"}', "
                "'{\"action\":\"list\"}' or '{\"action\":\"untask\",\"task_id\":12}'. "
                "'-' reads the object from stdin.",
                "tetherctl action '{\"action\": \"list\", \"sid\": \"AGENT_ID\"}'",
                "echo '{\"action\": \"untask\", \"tag\": \"web\"}' | tetherctl action -")
    p.add_argument("object", metavar="JSON", help="the action object, or - for stdin")

    _add_schedule_commands(command)
    _add_config_commands(command)
    _add_credential_commands(command)
    hooks.add_parser(command, _action)
    return parser


def _add_credential_commands(command: Callable[..., argparse.ArgumentParser]) -> None:
    """token, key, agent revoke: an admin token's commands (operator and viewer get 1403)."""
    op = _action

    ops = command("token", "admin tokens: create, list, revoke (admin only)",
                  "Admin tokens for tetherctl. A viewer reads; an operator also creates and cancels tasks, tags "
                  "agents and manages schedules; an admin also manages tokens, enrollment keys and agent "
                  "revocation. A token is shown once, when it is made. Revoking one closes the sessions open "
                  "with it at once (4010); the last admin token cannot be revoked.",
                  "tetherctl token create --role viewer --label dashboards", "tetherctl token list", group=True,
                  ).add_subparsers(dest="op", metavar="ACTION", required=True)
    p = op(ops, "create", "make an admin token (printed once; the same flags and default role as `tetherd token "
                          "create`)", "tetherctl token create --role admin --label alice",
           "TETHER_TOKEN=$(tetherctl token create --label ci) ./deploy.sh")
    flags.CREDENTIALS["token"].add_flags(p)
    op(ops, "list", "list admin tokens (ids, roles, labels; never the tokens)", "tetherctl token list --json")
    p = op(ops, "revoke", "revoke an admin token; its open sessions are closed at once", "tetherctl token revoke 3")
    p.add_argument("id", metavar="TOKEN_ID", type=flags.positive_int, help="from `tetherctl token list`")

    ops = command("key", "enrollment keys: create, list, revoke (admin only)",
                  "Enrollment keys for `tether-agent enroll`. Agents enrolling with a key get its tags. A key is "
                  "shown once, when it is made; a revoked key enrolls no one (agents already enrolled keep "
                  "their own tokens: revoke those with `tetherctl agent revoke`).",
                  "tetherctl key create --tag web --uses 50 --expires-in 7d", "tetherctl key list", group=True,
                  ).add_subparsers(dest="op", metavar="ACTION", required=True)
    p = op(ops, "create", "make an enrollment key (printed once; the same flags as `tetherd key create`)",
           "tetherctl key create --tag web --uses 50 --expires-in 7d", "tetherctl key create --tag lab --json")
    flags.CREDENTIALS["key"].add_flags(p)
    op(ops, "list", "list enrollment keys (ids, tags, expiry, uses left; never the keys)", "tetherctl key list")
    p = op(ops, "revoke", "revoke an enrollment key", "tetherctl key revoke 2")
    p.add_argument("id", metavar="KEY_ID", type=flags.positive_int, help="from `tetherctl key list`")

    ops = command("agent", "show an agent; revoke, remove, approve or merge one (admin only)",
                  "Show an agent: its identity, tags, whether it is online and when it was last seen, its "
                  "latest state report (agent version, OS, hostname, uptime, disks, memory, commands, last "
                  "task) and its newest state changes. Revoke an agent: its token stops working and its open session is closed at once (4010); the "
                  "agent stops and says it must enroll again (as a new agent: revoke the key it used as well "
                  "to keep it out). Remove an agent: the same, and its unfinished deliveries are cancelled and "
                  "it leaves every target and `agents` (but --all). A possible clone (an agent enrolled without "
                  "proof from another agent's machine UUID, noted in `agents`) is approved as an agent of its "
                  "own, or merged: it takes over the other agent's identity (id, tags, deliveries), whose old "
                  "token stops working.",
                  "tetherctl agent show AGENT_ID", "tetherctl agent revoke AGENT_ID", group=True,
                  ).add_subparsers(dest="op", metavar="ACTION", required=True)
    p = op(ops, "show", "an agent: identity, tags, online, last seen, state and its newest changes",
           "tetherctl agent show AGENT_ID", "tetherctl agent show AGENT_ID --changes 100 --json")
    p.add_argument("agent_id", metavar="AGENT_ID")
    p.add_argument("--changes", metavar="N", type=flags.positive_int, default=20,
                   help="how many of its newest state changes to show (default 20, at most 1000)")
    for name, summary in (("revoke", "revoke an agent's token and close its session"),
                          ("rm", "remove an agent: token void, unfinished deliveries cancelled, out of listings"),
                          ("approve", "accept a possible clone as an agent of its own"),
                          ("merge", "let a possible clone take over the identity of the agent it is a clone of")):
        op(ops, name, summary, f"tetherctl agent {name} AGENT_ID").add_argument("agent_id", metavar="AGENT_ID")


def _add_config_commands(command: Callable[..., argparse.ArgumentParser]) -> None:
    """config set / unset / show / drift: agents' configuration (set and unset need an operator)."""
    op = _action
    ops = command("config", "agents' configuration: set, unset, show, drift",
                  "Agents' configuration, layered: the defaults, then each tag an agent carries (alphabetical "
                  "order: a later tag wins a key two set), then the agent's own keys. Keys: state_interval "
                  "(a duration, 10s to 7d; default 5m), log_level (debug, info, warning, error; default info), "
                  "and app.NAME for the agent's own code (its @agent.on_config handlers): text, a number or "
                  "true/false (VALUE is read as JSON when it is a number, true or false; quote it as JSON, "
                  "app.v='\"1.10\"', to keep text). An unknown key or a wrong value is refused when set, "
                  "and nothing of the command is stored. Online agents get their new configuration at once; "
                  "the others when they connect.",
                  "tetherctl config set --tag web state_interval=1m app.mode=strict",
                  "tetherctl config show AGENT_ID", "tetherctl config drift", group=True,
                  ).add_subparsers(dest="op", metavar="ACTION", required=True)
    for name, summary, metavar, helptext in (
            ("set", "set keys for a tag or an agent", "KEY=VALUE", "keys and their values"),
            ("unset", "remove keys from a tag or an agent (the layer below applies again)", "KEY",
             "the keys to remove")):
        p = op(ops, name, summary, f"tetherctl config {name} --tag web "
                                   f"{'state_interval=10m' if name == 'set' else 'state_interval'}",
               f"tetherctl config {name} --agent AGENT_ID {'app.mode=strict' if name == 'set' else 'app.mode'}")
        target = p.add_mutually_exclusive_group(required=True)
        target.add_argument("--tag", metavar="T", help="every agent carrying this tag, now or later")
        target.add_argument("--agent", metavar="ID", help="one agent")
        p.add_argument("pairs", metavar=metavar, nargs="+", help=helptext)
    p = op(ops, "show", "an agent's desired configuration, where each key comes from, what it reported, the drift",
           "tetherctl config show AGENT_ID", "tetherctl config show AGENT_ID --json")
    p.add_argument("agent_id", metavar="AGENT_ID")
    op(ops, "drift", "agents whose reported configuration is not their desired one", "tetherctl config drift")


def _add_task_spec(p: argparse.ArgumentParser, *, each: str) -> None:
    """COMMAND, the target and the task's options: of `task`, and of each task a schedule makes."""
    p.add_argument("command", metavar="COMMAND", help="the command line, quoted as one argument")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--agent", metavar="ID", help="one agent")
    target.add_argument("--tag", metavar="T", help="every agent with this tag, now or until the ttl ends")
    target.add_argument("--all", action="store_true", help="every agent")
    if not each:  # a task, not a schedule's
        target.add_argument("--selector", metavar="EXPR",
                            help="every agent a LimaCharlie selector matches, now or until the ttl ends, "
                                 "e.g. 'plat == linux and \"prod\" in tags'")
        p.add_argument("--context", metavar="ID",
                       help="an investigation id (LimaCharlie's context), shown with the task's results")
        p.add_argument("--delay", metavar="DURATION", type=flags.duration,
                       help=f"push it to no agent before this long after now: {flags.DURATION}")
        p.add_argument("--jitter", metavar="DURATION", type=flags.duration,
                       help="and up to this long more, drawn for each agent (a fleet is not tasked at once); "
                            "the ttl still bounds both")
    p.add_argument("--args", metavar="JSON", help="a JSON object merged over the command line's args")
    p.add_argument("--ttl", metavar="DURATION", type=flags.whole_seconds,
                   help=f"{each}time to wait for offline agents: {flags.DURATION} (default 7d)")
    p.add_argument("--priority", type=_priority, default=1, metavar="{low,medium,high,urgent}",
                   help=f"{each}priority: agents run higher priorities first (default medium)")
    shown = p.add_mutually_exclusive_group()
    shown.add_argument("--show-polling-output", action="store_true",
                       help="polling commands: show in the history the runs after the first that show nothing "
                            "(by default they are left out, as XSOAR does, and counted)")
    shown.add_argument("--hide-polling-output", action="store_true",
                       help="the default (kept for older scripts): leave those runs out")


def _action(ops: Any, name: str, summary: str, *examples: str) -> argparse.ArgumentParser:
    """An ACTION of a command group (``schedule``, ``token``, ``key``, ``agent``)."""
    p: argparse.ArgumentParser = ops.add_parser(name, help=summary, description=summary,
                                                epilog=_epilog(*examples),
                                                formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_common(p, top=False)
    return p


def _add_schedule_commands(command: Callable[..., argparse.ArgumentParser]) -> None:
    sched = command("schedule", "recurring schedules: add, list, show, pause, resume, rm",
                    "Recurring schedules: each firing creates an ordinary task (push, ttl, untask and history "
                    "apply). Firings missed while tetherd was down run once at its start (--missed once, the "
                    "default) or are skipped (--missed skip).",
                    "tetherctl schedule add probes --every 5m os_version --tag linux", "tetherctl schedule list",
                    group=True)
    ops = sched.add_subparsers(dest="op", metavar="ACTION", required=True)
    p = ops.add_parser("add", help="add a schedule", description=textwrap.fill(
        "Add a schedule: every --every period (30s, 5m, 1h30m, 1d; the first firing one period from now, never "
        "below tetherd's min_interval, 10 s by default) or at the times of a five-field --cron expression "
        "(e.g. '*/5 * * * *', read in --tz). COMMAND is a command line as for `tetherctl task`.", 88),
        epilog=_epilog("tetherctl schedule add probes --every 5m os_version --tag linux",
                       "tetherctl schedule add nightly --cron \"0 3 * * *\" --tz Europe/Paris \"echo --deep\" --all "
                       "--missed skip"),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_common(p, top=False)
    p.add_argument("name", metavar="NAME", help="unique, case-sensitive, no spaces")
    when = p.add_mutually_exclusive_group(required=True)
    when.add_argument("--every", type=flags.duration, metavar="DURATION",
                      help=f"{flags.DURATION}; at least tetherd's min_interval")
    when.add_argument("--cron", metavar="EXPR", help="five fields: minute hour day-of-month month day-of-week")
    _add_task_spec(p, each="each task's ")
    p.add_argument("--missed", choices=("once", "skip"), default="once",
                   help="firings missed while tetherd was down: run once at start (default) or skip them")
    p.add_argument("--tz", default="UTC", metavar="ZONE", help="time zone of --cron (default UTC)")
    for op, summary in (("show", "show a schedule and its newest tasks"), ("pause", "stop firing until resumed"),
                        ("resume", "fire again, from the next firing after now"),
                        ("rm", "remove a schedule (its tasks stay)")):
        _action(ops, op, summary, f"tetherctl schedule {op} nightly").add_argument("name", metavar="NAME")
    _action(ops, "list", "list schedules", "tetherctl schedule list", "tetherctl schedule list --json")
