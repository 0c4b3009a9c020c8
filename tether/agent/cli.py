"""``tether-agent``: enroll, run the persistent session, show the journal's status.

Exit codes: 0 success (``run``: stopped by SIGTERM/SIGINT); 1 an error that needs a person
(not enrolled, refused enrollment, bad ``--commands``, another agent on the same state
directory); 3 the daemon ended the session fatally (unauthorized, replaced, unsupported
version) -- a systemd unit should use ``RestartPreventExitStatus=3``; 2 usage errors (bad
options, a state directory that cannot be used).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import importlib
import importlib.util
import json
import logging
import os
import random
import signal
import socket
import ssl
import sys
import textwrap
import time
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import IO, Any

from websockets.exceptions import InvalidHandshake, InvalidURI

from tether import __version__
from tether.protocol import MSGPACK, ErrorCode, flags, tags
from tether.protocol.alerts import parse_alert
from tether.protocol.endpoints import url_problem
from tether.protocol.frames import Alert
from tether.protocol.lifecycle import RunState

from . import host, statedir
from .client import AgentClient, ClientSettings, FatalSessionError, OnceUnfinished, private_transport
from .enrollment import Enrollment, EnrollmentError, enroll_agent
from .journal import JOURNAL_FILE, Identity, Journal
from .logfmt import LogfmtFormatter
from .sdk import Agent
from .tls import TLSFileError, TLSFiles, explain

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_FATAL_SESSION = 0, 1, 2, 3
EXIT_CODES_SHORT = """\
exit codes:
  0  ok
  1  an error that needs a person (not enrolled, the journal cannot be used)
  2  bad input (an option, a URL, a state directory that cannot be used)
"""
ENROLL_EXIT_CODES = EXIT_CODES_SHORT.replace("(not enrolled,", "(enrollment refused, the daemon unreachable,")
EXIT_CODES = """\
exit codes:
  0  ok (run: stopped by SIGTERM or SIGINT)
  1  an error that needs a person (not enrolled, a bad --commands, another agent on the state directory)
  2  bad input (an option, a URL, a state directory that cannot be used)
  3  the daemon ended the session for good (unauthorized, replaced by another agent, unsupported
     protocol version): do not restart it as is (systemd: RestartPreventExitStatus=3)
"""
ONCE_EXIT_CODES = """\
exit codes:
  0  every delivery taken ran and is done (or there was none)
  1  a delivery failed (its error is printed), the daemon could not be reached, or once was stopped
     before everything ran; also not enrolled, a bad --commands, another agent on the state directory
  2  bad input (an option, a URL, a state directory that cannot be used)
  3  the daemon refused this agent for good (unauthorized, replaced, unsupported protocol version)
"""
ENVIRONMENT = """\
environment:
  TETHER_AGENT_STATE_DIR  default for --state-dir
  STATE_DIRECTORY         default for --state-dir after it (set by systemd's StateDirectory=)
"""
NOT_ENROLLED = "not enrolled: run tether-agent enroll --server URL --key KEY"


class CliError(Exception):
    """A problem the user must fix; printed as ``error: <message>``, exit 1."""

    exit_code = EXIT_ERROR


class UsageError(CliError):
    """Bad input on the command line (a state directory that cannot be used, a bad URL): exit 2."""

    exit_code = EXIT_USAGE


def default_state_dir() -> Path:
    """``$TETHER_AGENT_STATE_DIR``, else ``$STATE_DIRECTORY`` (systemd's StateDirectory=,
    first entry), else ``./tether-agent-state``."""
    explicit = os.environ.get("TETHER_AGENT_STATE_DIR")
    if explicit:
        return Path(explicit)
    systemd = os.environ.get("STATE_DIRECTORY")
    if systemd:
        return Path(systemd.split(":")[0])
    return Path("tether-agent-state")


# -- commands ------------------------------------------------------------------------------


def cmd_enroll(opts: argparse.Namespace) -> int:
    _check_server(opts.server)
    machine_uuid = opts.machine_uuid or host.agent_machine_uuid(opts.state_dir)
    tls = _tls_files(opts) or TLSFiles()
    _state_dir(opts.state_dir, create=True)
    # Open the journal first: failing to store the token after the daemon issued it would
    # waste an enrollment key use.
    with Journal.in_state_dir(opts.state_dir) as journal:
        current = journal.identity()
        loses = "" if current is None else _what_is_dropped(journal.counts())
        if current is not None and not opts.force and current.server != opts.server:
            raise CliError(
                f"{opts.state_dir} is agent {current.agent_id} of {current.server}. If that tetherd is now "
                f"reached at {opts.server}: tether-agent set-server {opts.server}; to enroll with "
                f"{opts.server} as a new agent, dropping its {loses}: add --force")
        proof = None if opts.force else current
        lock = _lock_for_new_identity(opts.state_dir) if current is not None and opts.force else None
        try:
            enrolled = _run(enroll_agent(opts.server, opts.key, machine_uuid=machine_uuid, tags=opts.tag, tls=tls,
                                         proof=proof))
        except EnrollmentError as exc:
            hint = (f"; to enroll {opts.state_dir} as a new agent, dropping its {loses}: add --force"
                    if proof is not None and exc.code == ErrorCode.UNAUTHORIZED else "")
            raise CliError(f"enrollment refused: {exc.name} ({exc.code}): {exc.message}{hint}") from None
        except TLSFileError as exc:
            raise CliError(str(exc)) from None
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            raise CliError(f"cannot reach {opts.server}: {_unreachable(exc, opts.server)}") from None
        finally:
            if lock is not None:
                lock.close()
        identity = enrolled.identity
        if journal.set_identity(identity) and current is not None:
            print(f"warning: dropped agent {current.agent_id}'s {loses}", file=sys.stderr)
    if opts.json:
        print(json.dumps({"agent_id": identity.agent_id, "server": identity.server, "tags": list(identity.tags),
                          "status": "existing" if enrolled.existing else "new", "clone_of": enrolled.clone_of,
                          "replaces": enrolled.replaces}))
    else:
        print(identity.agent_id)
    print(_enrolled_as(enrolled), file=sys.stderr)
    return EXIT_OK


def _lock_for_new_identity(state_dir: Path) -> IO[str] | None:
    """No agent may run on the state directory while it becomes another agent's."""
    try:
        return statedir.lock(state_dir)
    except statedir.StateDirError as exc:
        raise CliError(f"{exc}; stop it before enrolling another agent there") from None


def _enrolled_as(enrolled: Enrollment) -> str:
    agent_id = enrolled.identity.agent_id
    if enrolled.existing:
        return f"re-enrolled as agent {agent_id} (existing: same id, token and tags; its journal is kept)"
    line = f"enrolled as new agent {agent_id}"
    if enrolled.replaces:
        line += (f", replacing agent {enrolled.replaces}: this machine's UUID changed since it enrolled (re-imaged, "
                 f"or cloned with its state directory); tetherd keeps {enrolled.replaces} as replaced, with its "
                 f"pending deliveries, until an admin removes it (tetherctl agent rm {enrolled.replaces})")
    if enrolled.clone_of:
        line += (f"; tetherd marked it a possible clone of agent {enrolled.clone_of}, enrolled before from this "
                 f"machine UUID: an admin approves it (tetherctl agent approve {agent_id}) or lets it take over "
                 f"that agent's identity (tetherctl agent merge {agent_id})")
    return line


def _what_is_dropped(counts: dict[str, int]) -> str:
    """What enrolling as another agent drops of this one's journal, in words."""
    return (f"journal ({counts[RunState.PENDING] + counts[RunState.RUNNING]} deliveries not yet run or running, "
            f"{counts['outbox']} results not yet committed by tetherd)")


def cmd_set_server(opts: argparse.Namespace) -> int:
    _check_server(opts.url)
    with _open_enrolled(opts.state_dir) as journal:
        if not journal.set_server(opts.url):
            raise CliError(NOT_ENROLLED)
    print(f"the agent in {opts.state_dir} reaches tetherd at {opts.url} from now on (a running agent from its "
          "next connection)", file=sys.stderr)
    return EXIT_OK


def _check_server(url: str) -> None:
    problem = url_problem(url)
    if problem is not None:
        raise UsageError(f"--server: {problem}")
    if not private_transport(url):
        print(f"warning: {url} is plain ws:// to another host: the agent's token and every task's args travel "
              "unencrypted; serve wss:// (README, TLS)", file=sys.stderr)


def cmd_status(opts: argparse.Namespace) -> int:
    journal = _open_enrolled(opts.state_dir)
    with journal:
        identity = journal.identity()
        counts = journal.counts()
    if identity is None:
        raise CliError(NOT_ENROLLED)
    view: dict[str, Any] = {"agent_id": identity.agent_id, "server": identity.server}
    view.update({name: path for name, path in (("ca", identity.tls.ca), ("cert", identity.tls.cert)) if path})
    view.update(counts)
    if opts.json:
        print(json.dumps(view))
    else:
        width = max(map(len, view))
        for key, value in view.items():
            print(f"{key:<{width}}  {value}")
    return EXIT_OK


def cmd_alert(opts: argparse.Namespace) -> int:
    """Journal an alert; the running agent sends it (signalled), or this process does."""
    try:
        body = parse_alert(json.loads(opts.alert_json))
    except json.JSONDecodeError as exc:
        raise UsageError(f"invalid alert: --json is not valid JSON: {exc}") from None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    journal = _open_enrolled(opts.state_dir)
    with journal:
        if journal.identity() is None:
            raise CliError(NOT_ENROLLED)
        alert_id, _ = journal.add_alert(lambda i: MSGPACK.encode(Alert(id=i, alert=body, raised_at=time.time())))
        try:
            lock = statedir.lock(opts.state_dir)
        except statedir.StateDirError:
            pid = statedir.holder_pid(opts.state_dir)
            if pid is not None:
                os.kill(pid, signal.SIGUSR1)
            print(f"alert {alert_id} journaled; the running agent{f' (pid {pid})' if pid else ''} sends it",
                  file=sys.stderr)
            return EXIT_OK
        try:
            client = AgentClient(journal, None, ClientSettings(builtins=False, tls=_tls_files(opts, journal.identity())))
            try:
                kept = _run(client.deliver_alerts(opts.timeout))
            except (OSError, TimeoutError, InvalidHandshake, FatalSessionError, InvalidURI, TLSFileError) as exc:
                identity = journal.identity()
                server = identity.server if identity else "?"
                raise CliError(f"alert {alert_id} journaled but not sent: {_unreachable(exc, server)}; the agent "
                               "sends it from its next session") from None
        finally:
            if lock is not None:
                lock.close()
    if kept:
        raise CliError(f"alert {alert_id} journaled but tetherd could not store it now; the agent sends it again "
                       "from its next session")
    print(f"alert {alert_id} taken by tetherd", file=sys.stderr)
    return EXIT_OK


def cmd_run(opts: argparse.Namespace) -> int:
    return _serve_journal(opts, once=False)


def cmd_once(opts: argparse.Namespace) -> int:
    """Connect, take every pending delivery, run them by priority, report, exit."""
    return _serve_journal(opts, once=True)


def _serve_journal(opts: argparse.Namespace, *, once: bool) -> int:
    """``run`` or ``once`` on the state directory's journal, holding its lock."""
    agent = load_agent(opts.commands) if opts.commands else None
    _state_dir(opts.state_dir, create=False)
    if not (opts.state_dir / JOURNAL_FILE).exists():
        raise CliError(f"{NOT_ENROLLED} (no journal in {opts.state_dir})")
    try:
        lock = statedir.lock(opts.state_dir)
    except statedir.StateDirError as exc:
        raise CliError(str(exc)) from None
    try:
        with Journal.in_state_dir(opts.state_dir) as journal:
            if journal.identity() is None:
                raise CliError(NOT_ENROLLED)
            if opts.server is not None:
                _check_server(opts.server)
                journal.set_server(opts.server)  # kept: the next start uses it too
            client = AgentClient(journal, agent, ClientSettings(
                concurrency=opts.concurrency, backoff_base=opts.backoff_base, backoff_cap=opts.backoff_cap,
                shutdown_grace=opts.grace, tls=_tls_files(opts, journal.identity()),
                max_frame_bytes=opts.max_frame_bytes, once=once,
            ))
            try:
                _run(_serve(client, _first_wait(opts) if once else 0.0))
            except FatalSessionError as exc:
                print(f"error: the daemon ended the session: {exc}", file=sys.stderr)
                return EXIT_FATAL_SESSION
            except asyncio.CancelledError:
                # The event loop is gone; this is the process's last word, not a swallow.
                print("error: stopped at once on a second signal; running commands were "
                      "recorded as failed", file=sys.stderr)
                return EXIT_ERROR
            except (InvalidURI, ValueError, TLSFileError) as exc:
                raise CliError(str(exc)) from None
            except OnceUnfinished as exc:
                if client.ran:
                    _report_once(client, opts.json)
                raise CliError(f"{exc}; nothing was lost: what is pending runs at the next tether-agent once") \
                    from None
            if once:
                return _report_once(client, opts.json)
    finally:
        if lock is not None:
            lock.close()
    return EXIT_OK


def _first_wait(opts: argparse.Namespace) -> float:
    """Armadito's ``-w S`` (``--wait``) and ``-wr S`` (``--random-wait``: 0 to S, so that a
    fleet started by one timer does not connect all at once)."""
    if opts.random_wait is not None:
        return random.uniform(0.0, opts.random_wait)
    return opts.wait or 0.0


def _report_once(client: AgentClient, as_json: bool) -> int:
    """What ``once`` ran, printed: each failed run's error on stderr (and a summary line),
    or one JSON object on stdout; exit 1 if a run failed or not everything was done."""
    failed = [r for r in client.ran if not r.ok]
    code = EXIT_OK if client.done and not failed else EXIT_ERROR
    if as_json:
        print(json.dumps({"complete": client.done, "ran": [
            {"delivery_id": r.delivery_id, "run": r.run, "task_id": r.task_id or None, "command": r.command or None,
             "ok": r.ok, "error": r.error} for r in client.ran]}))
        return code
    for r in failed:
        what = f"task {r.task_id}, delivery {r.delivery_id}" if r.task_id else f"delivery {r.delivery_id}"
        command = f" {r.command}" if r.command else ""
        run = f" run {r.run}" if r.run > 1 else ""
        print(f"failed: {what}{run}{command}: {r.error}", file=sys.stderr)
    summary = f"ran {len(client.ran)} deliveries: {len(client.ran) - len(failed)} done, {len(failed)} failed"
    if not client.done:
        summary += "; stopped before every pending delivery ran (the rest run at the next tether-agent once)"
    print(summary, file=sys.stderr)
    return code


async def _serve(client: AgentClient, first_wait: float = 0.0) -> None:
    """Run until SIGTERM/SIGINT (clean stop); a second signal cancels at once. ``first_wait``:
    seconds to wait before connecting (a signal meanwhile stops at once)."""
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    signals = 0
    stopped = asyncio.Event()

    def on_signal(signum: int) -> None:
        nonlocal signals
        signals += 1
        logging.getLogger("tether.agent").info("event=signal_received signal=%s", signal.Signals(signum).name)
        if signals == 1:
            client.stop()
            stopped.set()
        elif main is not None:
            main.cancel()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    usr1 = getattr(signal, "SIGUSR1", None)  # not on Windows: such alerts go with the next session
    if usr1 is not None:
        loop.add_signal_handler(usr1, client.send_new_alerts)  # tether-agent alert journaled one
    try:
        if first_wait > 0:
            logging.getLogger("tether.agent").info("event=waiting seconds=%.3f", first_wait)
            try:
                async with asyncio.timeout(first_wait):
                    await stopped.wait()
                return
            except TimeoutError:
                pass
        await client.run()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT, *([usr1] if usr1 is not None else [])):
            loop.remove_signal_handler(signum)


# -- helpers -------------------------------------------------------------------------------


def load_agent(spec: str) -> Agent:
    """``package.module:attr`` or ``path/to/file.py:attr`` -> the :class:`Agent` it names."""
    module_part, sep, attr = spec.rpartition(":")
    if not sep or not module_part or not attr:
        raise CliError(f"--commands wants module:attr or path/to/file.py:attr, got {spec!r}")
    try:
        if module_part.endswith(".py") or os.sep in module_part:
            path = Path(module_part)
            if not path.is_file():
                raise CliError(f"--commands: no such file {str(path)!r}")
            name = f"tether_agent_commands_{path.stem}"
            module_spec = importlib.util.spec_from_file_location(name, path)
            if module_spec is None or module_spec.loader is None:
                raise CliError(f"--commands: cannot load {str(path)!r} as a Python module")
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[name] = module
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_part)
    except CliError:
        raise
    except Exception as exc:  # the user's module failed at import: say which and why
        raise CliError(f"--commands: importing {module_part!r} failed: {type(exc).__name__}: {exc}") from None
    try:
        obj = functools.reduce(getattr, attr.split("."), module)
    except AttributeError:
        raise CliError(f"--commands: {module_part!r} has no attribute {attr!r}") from None
    if not isinstance(obj, Agent):
        raise CliError(f"--commands: {spec} is a {type(obj).__name__}, not a tether.agent.Agent")
    return obj


def _unreachable(exc: BaseException, server: str) -> str:
    hint = explain(exc, server)
    text = str(exc) or type(exc).__name__
    if hint and (isinstance(exc, ssl.SSLError | ConnectionRefusedError | socket.gaierror) or text in hint):
        return hint  # all the exception says, in words
    return f"{text} ({hint})" if hint else text


def _tls_files(opts: argparse.Namespace, identity: Identity | None = None) -> TLSFiles | None:
    """The TLS files the command line names, made absolute (``enroll`` keeps them for ``run``,
    which may start elsewhere); for ``run``, over those of the ``identity``: ``--ca`` alone
    keeps the enrolled client certificate, ``--cert``/``--cert-key`` (always both) keep the
    enrolled CA. ``None``: the command line names none."""
    given = TLSFiles(opts.ca or "", opts.cert or "", opts.cert_key or "")
    if not given:
        return None
    if bool(given.cert) != bool(given.key):
        raise CliError("--cert and --cert-key go together: a client certificate needs its private key")
    given = given.absolute()
    if identity is None:
        return given
    kept = identity.tls
    return TLSFiles(given.ca or kept.ca, given.cert or kept.cert, given.key or kept.key)


def _state_dir(state_dir: Path, *, create: bool) -> None:
    try:
        statedir.prepare(state_dir, create=create)
    except statedir.StateDirError as exc:
        raise UsageError(str(exc)) from None


def _open_enrolled(state_dir: Path) -> Journal:
    _state_dir(state_dir, create=False)
    if not (state_dir / JOURNAL_FILE).exists():
        raise CliError(f"{NOT_ENROLLED} (no journal in {state_dir})")
    return Journal.in_state_dir(state_dir)


def _run(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run on uvloop when it is installed (DESIGN "Concurrency"), else plain asyncio."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def _setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("websockets").setLevel(logging.WARNING)


# -- argument parsing ----------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    state_help = (
        "directory holding the journal (identity, deliveries, result outbox); default: "
        "$TETHER_AGENT_STATE_DIR, else $STATE_DIRECTORY (systemd), else ./tether-agent-state"
    )
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="tether-agent",
        description="The tether agent: keeps a session with tetherd and runs the tasks it is given.",
        epilog=EXIT_CODES + "\n" + ENVIRONMENT, formatter_class=formatter,
    )
    parser.add_argument("--version", action="version", version=f"tether-agent {__version__}")
    parser.add_argument("--json", action="store_true", default=False,
                        help="print JSON (enroll, status); also after COMMAND")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--state-dir", type=Path, default=None, metavar="S", help=state_help)
    common.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                        help="log verbosity on stderr, key=value lines (default: info)")
    tls = argparse.ArgumentParser(add_help=False)
    group = tls.add_argument_group("TLS (wss:// URLs)")
    group.add_argument("--ca", metavar="FILE", default=None,
                       help="PEM CA certificates to trust for the daemon's certificate, instead of the "
                            "system's store (a private CA)")
    group.add_argument("--cert", metavar="FILE", default=None,
                       help="PEM client certificate chain, for a daemon that requires one (tls_client_ca)")
    # Not --key: that is enroll's enrollment key.
    group.add_argument("--cert-key", metavar="FILE", default=None,
                       help="PEM private key of --cert, without a passphrase")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, parents: list[argparse.ArgumentParser], summary: str, description: str,
                *examples: str, codes: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=parents, help=summary, description=textwrap.fill(description, 88),
                              epilog=f"{flags.examples(*examples)}\n{codes}\n{ENVIRONMENT}", formatter_class=formatter)

    p = command(
        "enroll", [common, tls], "enroll with a daemon using an enrollment key",
        "Trade an enrollment key for an agent id and token, stored in the state directory. "
                    "Prints the agent id (and on stderr whether it is a new or an existing agent). Enrolling "
                    "again into the same state directory proves the agent with its token: same id, token and "
                    "tags, the journal (deliveries, results not yet sent) is kept. If that is refused (the "
                    "agent was revoked or removed), or the state directory belongs to another server URL, "
                    "nothing changes unless --force. Each state directory is one agent. "
                    "The TLS files given are stored too (as absolute paths) and used by run.",
        "tether-agent enroll --server ws://tetherd.example:8765 --key AAAAA-AAAAA-AAAAA-AAAAA-AAAAA",
        "tether-agent enroll --server wss://tetherd.example:8765 --key KEY --ca ca.pem --state-dir /var/lib/tether-agent",
        codes=ENROLL_EXIT_CODES,
    )
    p.add_argument("--server", required=True, metavar="URL", help="daemon URL, e.g. ws://tetherd:8765 or wss://...")
    p.add_argument("--key", required=True, help="enrollment key (AAAAA-AAAAA-AAAAA-AAAAA-AAAAA)")
    p.add_argument("--tag", action="append", default=[], type=flags.tag, metavar="T",
                   help=f"ask for this tag (repeatable; {tags.RULE})")
    p.add_argument("--machine-uuid", default=None, metavar="U",
                   help="override the machine UUID (default: derived from the host's id -- /etc/machine-id, "
                        "else the SMBIOS product UUID, else the MAC address -- and the state directory's path)")
    p.add_argument("--force", action="store_true",
                   help="enroll as a new agent even if the state directory holds one (its journal is dropped: "
                        "deliveries not yet run and results not yet sent)")
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                   help='print {"agent_id", "server", "tags", "status": "new"|"existing", "clone_of", "replaces"} '
                        'as JSON')
    p.set_defaults(func=cmd_enroll)

    p = command(
        "set-server", [common], "reach the same daemon at another URL (no re-enrollment)",
        "Store a new URL for the daemon this agent is enrolled with (it moved, or is reached "
                    "by another name): the identity, deliveries and results stay. A running agent uses it "
                    "from its next connection. To enroll with another daemon, use enroll --force.",
        "tether-agent set-server wss://tetherd.example:8765 --state-dir /var/lib/tether-agent",
        codes=EXIT_CODES_SHORT,
    )
    p.add_argument("url", metavar="URL", help="ws://HOST:PORT or wss://HOST:PORT")
    p.set_defaults(func=cmd_set_server)

    p = command(
        "run", [common, tls], "keep a session with the daemon and run tasks until SIGTERM",
        "Connect to the daemon, run pushed tasks (highest priority first), reconnect with "
                    "backoff when the connection drops. SIGTERM/SIGINT: start nothing new, let running "
                    "commands finish (up to --grace), send their results, close, exit 0. "
                    "TLS files given here replace those stored at enrollment, for this process.",
        "tether-agent run --state-dir ./agent1",
        "tether-agent run --commands mycommands:agent --concurrency 8 --grace 30s",
        codes=EXIT_CODES,
    )
    _serving_options(p, concurrency=4)
    p.set_defaults(func=cmd_run)

    p = command(
        "alert", [common, tls], "raise an alert from a script (deduplicated by tetherd)",
        "Raise an alert, given as a JSON object: kind and name (required), path, hash, "
                    "severity (info, low, medium, high, critical; default medium), message, details (an "
                    "object). It is journaled first, so it is never lost: a running agent on this state "
                    "directory is signalled (SIGUSR1) and sends it; with none running, this command sends it "
                    "and waits until tetherd has taken it. tetherd keeps each distinct alert once, with a count "
                    "(tetherctl alerts). A bad alert is refused here, naming the field, and nothing is kept.",
        "tether-agent alert --json '{\"kind\": \"integrity\", \"name\": \"sshd_config changed\", "
        "\"path\": \"/etc/ssh/sshd_config\"}'",
        "tether-agent alert --state-dir /var/lib/tether-agent --json \"$(jq -n --arg p \"$FILE\" "
        "'{kind: \"script\", name: \"big file\", path: $p}')\"",
        codes=EXIT_CODES_SHORT,
    )
    p.add_argument("--json", dest="alert_json", required=True, metavar="JSON", help="the alert, a JSON object")
    p.add_argument("--timeout", type=flags.duration, default=30.0, metavar="DURATION",
                   help="when no agent runs: how long to try to hand it to tetherd (default: 30s)")
    p.set_defaults(func=cmd_alert)

    p = command(
        "once", [common, tls], "take every pending task, run them by priority, report, exit (cron, timers)",
        "For endpoints that keep no session (run from cron or a systemd timer: "
                    "systemd/tether-agent-once.timer). Optionally wait (--wait, or --random-wait so that a "
                    "fleet does not connect at once), connect, take every delivery pending for this agent, "
                    "run them one at a time by priority (urgent first, then oldest), send the results, wait "
                    "until tetherd has committed them, and exit: 0 if every one is done, 1 if one failed (each "
                    "error printed on stderr). Nothing is lost or run twice if it is killed half-way: the next "
                    "once runs what was pending and sends what was not committed (a command killed while "
                    "running is reported failed, never run again). A polling command's next run, and a task "
                    "not yet due (--delay), come with a later once.",
        "tether-agent once --state-dir /var/lib/tether-agent",
        "tether-agent once --random-wait 5m --commands mycommands:agent",
        codes=ONCE_EXIT_CODES,
    )
    wait = p.add_mutually_exclusive_group()
    wait.add_argument("--wait", type=flags.duration, default=None, metavar="DURATION",
                      help=f"wait this long before connecting (Armadito's -w): {flags.DURATION}")
    wait.add_argument("--random-wait", type=flags.duration, default=None, metavar="DURATION",
                      help="wait a random time between 0 and this before connecting (Armadito's -wr)")
    _serving_options(p, concurrency=1)
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                   help='print {"complete", "ran": [{"delivery_id", "run", "task_id", "command", "ok", "error"}]}: '
                        'complete is false if it stopped before every pending delivery ran')
    p.set_defaults(func=cmd_once)

    p = command(
        "status", [common], "show identity and journal counts (no network)",
        "Read the journal only: agent id, server, and how many deliveries are pending, "
                    "running, finished, and results waiting in the outbox for the daemon to commit.",
        "tether-agent status --state-dir /var/lib/tether-agent", "tether-agent status --json",
        codes=EXIT_CODES_SHORT,
    )
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                   help="print agent_id, server, pending, running, outbox, finished as JSON")
    p.set_defaults(func=cmd_status)
    return parser


def _serving_options(p: argparse.ArgumentParser, *, concurrency: int) -> None:
    """The options of the commands that serve the journal's deliveries (``run``, ``once``)."""
    p.add_argument("--server", default=None, metavar="URL",
                   help="the daemon's URL, if it changed since enrollment (kept for the next starts too)")
    p.add_argument("--commands", default=None, metavar="MODULE:ATTR",
                   help="an Agent instance whose commands are served besides the built-ins "
                        "(os_version, echo): package.module:agent or /path/to/file.py:agent")
    p.add_argument("--concurrency", type=flags.positive_int, default=concurrency, metavar="N",
                   help=f"commands run at once (default: {concurrency})")
    p.add_argument("--max-frame-bytes", type=flags.positive_int, default=host.MAX_FRAME_BYTES, metavar="BYTES",
                   help="largest message taken from tetherd; a larger one ends the session (default: 4194304; keep "
                        "tetherd's max_frame_bytes below it)")
    p.add_argument("--backoff-base", type=flags.duration, default=0.2, metavar="DURATION",
                   help=f"first reconnect delay ceiling, doubled per failure: {flags.DURATION} (default: 0.2s)")
    p.add_argument("--backoff-cap", type=flags.duration, default=30.0, metavar="DURATION",
                   help="largest reconnect delay ceiling (default: 30s)")
    p.add_argument("--grace", type=flags.duration, default=10.0, metavar="DURATION",
                   help="on shutdown, how long running commands may take to finish (default: 10s)")


def main(argv: Sequence[str] | None = None) -> int:
    opts = build_parser().parse_args(argv)
    if getattr(opts, "state_dir", None) is None:
        opts.state_dir = default_state_dir()
    _setup_logging(opts.log_level)
    try:
        return int(opts.func(opts))
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
