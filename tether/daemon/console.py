"""tetherctl: the admin console of tetherd.

tetherctl opens a ``console`` session (JSON text frames, see ``docs/protocol.md``) with an
admin token and sends one request per invocation. It depends only on the standard library,
msgspec, websockets and :mod:`tether.protocol`, so it runs on any machine that has the
agent's dependencies, without the daemon extra.

Every command prints a readable table, or the daemon's raw result with ``--json``.
The server URL and the token come from ``--server``/``--token`` or the environment
variables ``TETHER_URL``/``TETHER_TOKEN``.

Exit codes:

* ``0``   ok
* ``1``   the task failed (``wait``: a delivery failed, expired or was cancelled)
* ``2``   bad input, or an error answered by the daemon (``error: NAME (CODE): MESSAGE``)
* ``3``   cannot connect, the daemon refused the handshake (e.g. ``unauthorized (4010)``),
  or the session ended before the answer
* ``124`` ``wait`` timed out: some delivery has not finished
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import textwrap
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, TextIO

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

from tether.protocol import JSON, PROTOCOL_VERSION, ErrorCode, ProtocolError, decode_from_daemon
from tether.protocol import console as rpc
from tether.protocol.actions import action_to_request
from tether.protocol.cmdline import parse_command_line
from tether.protocol.frames import Error, Event, Frame, Hello, Request, Response, Welcome
from tether.protocol.states import DeliveryState

DEFAULT_URL = "ws://127.0.0.1:8765"
OPEN_TIMEOUT = 10.0
"""Seconds to open the WebSocket and get ``welcome`` for our ``hello``."""

EXIT_OK = 0
EXIT_TASK_FAILED = 1
EXIT_INPUT = 2
EXIT_CONNECT = 3
EXIT_TIMEOUT = 124
"""As timeout(1)."""

EXIT_CODES_HELP = """\
exit codes:
  0    ok
  1    the task failed (wait: a delivery failed, expired or was cancelled)
  2    bad input, or an error answered by the daemon
  3    cannot connect, or the daemon refused the handshake (e.g. unauthorized)
  124  wait timed out (some delivery has not finished)

environment:
  TETHER_URL    default for --server (else ws://127.0.0.1:8765)
  TETHER_TOKEN  default for --token
"""


# -- errors --------------------------------------------------------------------------------


class ConsoleError(Exception):
    """A failure tetherctl reports as ``error: ...`` on stderr and turns into an exit code."""

    exit_code = EXIT_INPUT


class CannotConnect(ConsoleError):
    exit_code = EXIT_CONNECT

    def __init__(self, url: str, reason: object) -> None:
        super().__init__(f"cannot connect to {url}: {reason}")


class DaemonError(ConsoleError):
    """An ``error`` frame, or a close code, from the daemon."""

    def __init__(self, code: int, name: str, message: str) -> None:
        super().__init__(f"{name} ({code}): {message}")
        self.code = code
        self.name = name
        self.message = message


class RequestError(DaemonError):
    """The daemon refused the request (1xxx); the input was wrong."""

    exit_code = EXIT_INPUT


class SessionClosed(DaemonError):
    """The daemon refused the handshake or ended the session (4xxx or a WebSocket close)."""

    exit_code = EXIT_CONNECT


def _error_from_frame(frame: Error) -> DaemonError:
    kind = SessionClosed if frame.code >= 4000 else RequestError
    return kind(frame.code, frame.name, frame.message)


def _error_from_close(exc: ConnectionClosed, url: str) -> SessionClosed:
    if exc.rcvd is None:
        return SessionClosed(1006, "connection_lost", f"the connection to {url} was lost")
    code, reason = exc.rcvd.code, exc.rcvd.reason
    try:
        name = ErrorCode(code).slug
    except ValueError:
        name = "closed"
    return SessionClosed(code, name, reason or "the daemon closed the session")


# -- the client ----------------------------------------------------------------------------


class ConsoleClient:
    """One console session: ``async with ConsoleClient(url, token) as c: await c.call(...)``.

    Entering opens the WebSocket and completes the ``hello``/``welcome`` handshake within
    ``open_timeout`` seconds, or raises :class:`CannotConnect` / :class:`SessionClosed`.
    :meth:`call` returns the result or raises :class:`RequestError` (1xxx) or
    :class:`SessionClosed`. Calls may run concurrently on one session: one reader task,
    owned by the client and ended by :meth:`close`, hands each answer to its caller by id.
    """

    def __init__(self, url: str, token: str, *, open_timeout: float = OPEN_TIMEOUT) -> None:
        self.url = url
        self.token = token
        self.open_timeout = open_timeout
        self.welcome: Welcome | None = None
        self._ws: ClientConnection | None = None
        self._last_id = 0
        self._pending: dict[int, tuple[asyncio.Future[Any], Callable[[Event], None] | None]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._ended: DaemonError | None = None

    async def __aenter__(self) -> ConsoleClient:
        try:
            # Results (task.list of a large fleet) may exceed websockets' 1 MiB default.
            self._ws = await connect(self.url, open_timeout=self.open_timeout, max_size=None)
        except (OSError, TimeoutError, WebSocketException) as exc:
            raise CannotConnect(self.url, str(exc) or type(exc).__name__) from None
        try:
            async with asyncio.timeout(self.open_timeout):
                await self._send(Hello(role="console", version=PROTOCOL_VERSION, token=self.token))
                frame = await self._recv()
        except TimeoutError:
            await self._ws.close()
            raise CannotConnect(self.url, f"no welcome within {self.open_timeout:g} s") from None
        except BaseException:
            await self._ws.close()
            raise
        if isinstance(frame, Welcome):
            self.welcome = frame
            self._reader = asyncio.get_running_loop().create_task(self._read_answers(), name="console-reader")
            return self
        await self._ws.close()
        if isinstance(frame, Error):
            raise SessionClosed(frame.code, frame.name, frame.message)
        raise SessionClosed(int(ErrorCode.BAD_HELLO), "unexpected_frame", f"expected welcome, got {type(frame).__name__}")

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            await self._reader  # ends once the connection is closed
            self._reader = None

    async def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        on_event: Callable[[Event], None] | None = None,
    ) -> Any:
        """Send ``req(method, params)`` and return the ``res`` result.

        ``event`` frames for this request (``task.wait`` progress) go to ``on_event``.
        """
        if self._ended is not None:
            raise self._ended
        self._last_id += 1
        rid = self._last_id
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[rid] = (fut, on_event)
        try:
            await self._send(Request(id=rid, method=method, params=params or {}))
            return await fut
        finally:
            self._pending.pop(rid, None)

    async def _read_answers(self) -> None:
        """Hand every answer to the call waiting for it, until the session ends."""
        try:
            while True:
                frame = await self._recv()
                if isinstance(frame, Error) and (frame.code >= 4000 or frame.ref not in self._pending):
                    self._end(_error_from_frame(frame))  # about the session, not one request
                    continue
                rid = frame.ref if isinstance(frame, Error) else getattr(frame, "id", None)
                if rid not in self._pending:
                    continue
                fut, on_event = self._pending[rid]
                if isinstance(frame, Event):
                    if on_event is not None:
                        on_event(frame)
                elif fut.done():
                    continue
                elif isinstance(frame, Response):
                    fut.set_result(frame.result)
                elif isinstance(frame, Error):
                    fut.set_exception(_error_from_frame(frame))
        except DaemonError as exc:
            self._end(exc)

    def _end(self, error: DaemonError) -> None:
        """Fail every waiting call (and later ones, if the session is over) with ``error``."""
        if isinstance(error, SessionClosed):
            self._ended = error
        for fut, _ in self._pending.values():
            if not fut.done():
                fut.set_exception(error)

    async def _send(self, frame: Frame) -> None:
        assert self._ws is not None
        try:
            await self._ws.send(JSON.encode(frame), text=True)
        except ConnectionClosed as exc:
            raise _error_from_close(exc, self.url) from None

    async def _recv(self) -> Frame:
        assert self._ws is not None
        while True:
            try:
                data = await self._ws.recv()
            except ConnectionClosed as exc:
                raise _error_from_close(exc, self.url) from None
            try:
                return decode_from_daemon(data)
            except ProtocolError as exc:
                if exc.code is ErrorCode.UNKNOWN_FRAME:
                    continue  # a newer daemon's frame type: never reuses a tag, safe to skip
                raise SessionClosed(int(exc.code), exc.code.slug, f"the daemon sent {exc.message}") from None


# -- rendering -----------------------------------------------------------------------------


def fmt_time(ts: float | None) -> str:
    """A Unix time as ISO-8601 UTC, to the second; ``-`` when unset."""
    if not ts:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def fmt_priority(value: int) -> str:
    return rpc.PRIORITY_NAMES.get(value, str(value))


def render_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Columns padded to their widest cell; numbers right-aligned."""
    cells = [[str(c) for c in headers], *([str(c) for c in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    numeric = [all(isinstance(row[i], int) for row in rows) and bool(rows) for i in range(len(headers))]
    lines = []
    for row in cells:
        parts = [c.rjust(w) if num else c.ljust(w) for c, w, num in zip(row, widths, numeric, strict=True)]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def _fields(pairs: Sequence[tuple[str, object]], indent: str = "  ") -> str:
    width = max(len(k) for k, _ in pairs)
    return "\n".join(f"{indent}{k.ljust(width)}  {v}" for k, v in pairs)


def _pretty(value: Any, indent: str) -> str:
    text = json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)
    return "\n".join(indent + line for line in text.splitlines())


def render_agents(result: Any) -> str:
    agents = msgspec.convert(result, list[rpc.AgentView])
    if not agents:
        return "no agents"
    rows = [
        (a.agent_id, a.hostname, a.platform, "yes" if a.online else "no", fmt_time(a.last_seen),
         ",".join(a.tags) or "-")
        for a in agents
    ]
    return render_table(("AGENT", "HOSTNAME", "PLATFORM", "ONLINE", "LAST SEEN", "TAGS"), rows)


def render_deliveries(result: Any) -> str:
    rows_ = msgspec.convert(result, list[rpc.DeliveryRow])
    if not rows_:
        return "no deliveries"
    rows = [
        (r.task_id, r.delivery_id, r.agent_id, r.command, r.state, fmt_priority(r.priority),
         fmt_time(r.created_at), fmt_time(r.expires_at))
        for r in rows_
    ]
    return render_table(("TASK", "DELIVERY", "AGENT", "COMMAND", "STATE", "PRIORITY", "CREATED", "EXPIRES"), rows)


def render_task(result: Any) -> str:
    task = msgspec.convert(result, rpc.TaskView)
    counts: dict[str, int] = {}
    for d in task.deliveries:
        counts[d.state] = counts.get(d.state, 0) + 1
    summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "none"
    out = [
        f"task {task.task_id}",
        _fields([
            ("command", task.command),
            ("args", json.dumps(task.args, ensure_ascii=False, sort_keys=True)),
            ("target", task.target),
            ("priority", f"{fmt_priority(task.priority)} ({task.priority})"),
            ("ttl", f"{task.ttl} s"),
            ("created", fmt_time(task.created_at)),
            ("expires", fmt_time(task.expires_at)),
            ("state", task.state),
            ("deliveries", summary),
        ]),
    ]
    for d in task.deliveries:
        pairs: list[tuple[str, object]] = [
            ("updated", fmt_time(d.updated_at)),
            ("sent", fmt_time(d.sent_at)),
            ("acked", fmt_time(d.acked_at)),
            ("started", fmt_time(d.started_at)),
            ("finished", fmt_time(d.finished_at)),
        ]
        if d.progress:
            pairs.append(("progress", d.progress))
        if d.error:
            pairs.append(("error", d.error))
        out += ["", f"delivery {d.delivery_id}  agent {d.agent_id}  {d.state}", _fields(pairs)]
        if d.result is not None:
            out += ["  result", _pretty(d.result, "    ")]
    return "\n".join(out)


_TERMINAL = {s.value for s in DeliveryState if s.terminal}


def wait_outcome(result: Any) -> int:
    """The exit code of ``wait`` for its final TaskView."""
    task = msgspec.convert(result, rpc.TaskView)
    states = {d.state for d in task.deliveries}
    if states - _TERMINAL:
        return EXIT_TIMEOUT
    if states - {DeliveryState.DONE.value}:
        return EXIT_TASK_FAILED
    return EXIT_OK


def progress_line(event: Event) -> str:
    """One stderr line for a ``task.wait`` delivery event."""
    try:
        d = msgspec.convert(event.data, rpc.DeliveryView)
    except msgspec.ValidationError:
        return f"{event.topic}: {json.dumps(event.data, ensure_ascii=False)}"
    line = f"{fmt_time(d.updated_at)}  delivery {d.delivery_id}  agent {d.agent_id}  {d.state}"
    if d.progress:
        line += f"  {d.progress}"
    if d.error:
        line += f"  error: {d.error}"
    return line


# -- the command line ----------------------------------------------------------------------


Render = Callable[[Any, argparse.Namespace], int]


def _print_raw(result: Any, out: TextIO) -> None:
    print(json.dumps(result, indent=2, ensure_ascii=False), file=out)


def _show(render: Callable[[Any], str]) -> Render:
    def show(result: Any, args: argparse.Namespace) -> int:
        print(render(result), file=args.stdout)
        return EXIT_OK

    return show


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _show_created(result: Any, args: argparse.Namespace) -> int:
    created = msgspec.convert(result, rpc.TaskCreated)
    print(created.task_id, file=args.stdout)
    print(f"task {created.task_id}: {_count(created.deliveries, 'delivery', 'deliveries')} queued", file=args.stderr)
    return EXIT_OK


def _show_cancelled(result: Any, args: argparse.Namespace) -> int:
    cancelled = msgspec.convert(result, rpc.Cancelled)
    print(f"cancelled {_count(cancelled.cancelled, 'delivery', 'deliveries')}", file=args.stdout)
    return EXIT_OK


def _show_tag(result: Any, args: argparse.Namespace) -> int:
    done = "added to" if args.op == "add" else "removed from"
    line = f"tag {args.tag!r} {done} agent {args.agent_id}"
    if isinstance(result, dict) and isinstance(result.get("new_deliveries"), int):
        line += f" ({_count(result['new_deliveries'], 'delivery', 'deliveries')} of tag tasks queued)"
    print(line, file=args.stdout)
    return EXIT_OK


def _show_wait(result: Any, args: argparse.Namespace) -> int:
    if not args.json:
        print(render_task(result), file=args.stdout)
    return wait_outcome(result)


RENDER: dict[str, Render] = {
    "agents.list": _show(render_agents),
    "tag.add": _show_tag,
    "tag.rm": _show_tag,
    "task.create": _show_created,
    "task.list": _show(render_deliveries),
    "task.get": _show(render_task),
    "task.wait": _show_wait,
    "task.cancel": _show_cancelled,
}


def _priority(text: str) -> int:
    if text in rpc.PRIORITIES:
        return rpc.PRIORITIES[text]
    if text.isdigit() and int(text) in rpc.PRIORITY_NAMES:
        return int(text)
    raise argparse.ArgumentTypeError(f"invalid priority {text!r}: use low, medium, high or urgent (or 0-3)")


def _target(args: argparse.Namespace) -> dict[str, Any]:
    target: dict[str, Any] = {}
    if args.agent is not None:
        target["agent"] = args.agent
    if args.tag is not None:
        target["tag"] = args.tag
    if getattr(args, "all", False):
        target["all"] = True
    return target


def _json_arg(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConsoleError(f"{what} is not valid JSON: {exc}") from None


def plan(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """The request a parsed command line sends, validated locally: nothing is sent for
    input the daemon would refuse anyway."""
    cmd = args.cmd
    params: dict[str, Any]
    if cmd == "agents":
        method, params = "agents.list", {"online": args.online}
        if args.tag is not None:
            params["tag"] = args.tag
    elif cmd == "tag":
        method, params = f"tag.{args.op}", {"agent_id": args.agent_id, "tag": args.tag}
    elif cmd == "task":
        task_args = _json_arg(args.args, "--args") if args.args is not None else {}
        if not isinstance(task_args, dict):
            raise ConsoleError(f"--args must be a JSON object, not {type(task_args).__name__}: {args.args}")
        parse_command_line(args.command)  # the daemon splits it; refuse bad quoting here
        method = "task.create"
        params = {"command": args.command, "args": task_args, **_target(args), "priority": args.priority}
        if args.ttl is not None:
            params["ttl"] = args.ttl
    elif cmd == "tasks":
        method, params = "task.list", _target(args)
        if args.state is not None:
            params["state"] = args.state
        if args.limit is not None:
            params["limit"] = args.limit
    elif cmd == "show":
        method, params = "task.get", {"task_id": args.task_id}
    elif cmd == "wait":
        method, params = "task.wait", {"task_id": args.task_id}
        if args.timeout is not None:
            params["timeout"] = args.timeout
    elif cmd == "untask":
        method, params = "task.cancel", _target(args)
        if args.task_id is not None:
            params["task_id"] = args.task_id
    else:  # action
        text = args.stdin.read() if args.object == "-" else args.object
        obj = _json_arg(text, "the action")
        rpc.parse_params(*action_to_request(obj))  # what the daemon would refuse anyway
        return "action", obj
    rpc.parse_params(method, params)
    return method, params


def _render_for(method: str, params: dict[str, Any]) -> Render:
    if method == "action":
        method, _ = action_to_request(params)
    return RENDER[method]


def _add_common(p: argparse.ArgumentParser, *, top: bool) -> None:
    # On the top parser these carry the defaults; on subcommands they are SUPPRESSed so
    # `tetherctl agents --server URL` and `tetherctl --server URL agents` both work.
    default: Any = argparse.SUPPRESS
    p.add_argument("--server", metavar="URL", help="daemon URL, ws:// or wss:// (env TETHER_URL)",
                   **({"default": None} if top else {"default": default}))
    p.add_argument("--token", help="admin token (env TETHER_TOKEN)",
                   **({"default": None} if top else {"default": default}))
    if not top:
        p.add_argument("--json", action="store_true", help="print the daemon's raw result as JSON")


def build_parser() -> argparse.ArgumentParser:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="tetherctl",
        description="The admin console of tetherd: agents, tags and tasks.",
        epilog=EXIT_CODES_HELP,
        formatter_class=formatter,
    )
    _add_common(parser, top=True)
    sub = parser.add_subparsers(dest="cmd", metavar="COMMAND", required=True)

    def command(name: str, summary: str, description: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=summary, description=textwrap.fill(description, 88), epilog=EXIT_CODES_HELP,
                           formatter_class=formatter)
        _add_common(p, top=False)
        return p

    p = command("agents", "list enrolled agents",
                "List enrolled agents: id, hostname, platform, online, last seen, tags.")
    p.add_argument("--tag", help="only agents carrying this tag")
    p.add_argument("--online", action="store_true", help="only agents with an open session")

    p = command("tag", "add a tag to an agent or remove one",
                "Add a tag to an agent or remove it. Tag tasks still within their ttl reach an "
                "agent that is tagged later.")
    p.add_argument("op", choices=("add", "rm"), help="add or rm")
    p.add_argument("agent_id", metavar="AGENT_ID")
    p.add_argument("tag", metavar="TAG", help="1-128 characters, no spaces")

    p = command("task", "queue a task for an agent, a tag or every agent",
                "Queue a task. Offline agents get it when they connect, until the ttl ends. "
                "COMMAND is a command line such as \"file_get --path /etc/hosts\": "
                "--name value gives {\"name\": \"value\"}, a bare --flag gives true, "
                "positionals go to \"argv\". Prints the task id.")
    p.add_argument("command", metavar="COMMAND", help="the command line, quoted as one argument")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--agent", metavar="ID", help="one agent")
    target.add_argument("--tag", metavar="T", help="every agent with this tag, now or until the ttl ends")
    target.add_argument("--all", action="store_true", help="every agent")
    p.add_argument("--args", metavar="JSON", help="a JSON object merged over the command line's args")
    p.add_argument("--ttl", metavar="S", type=int, help=f"seconds to wait for offline agents (default {rpc.DEFAULT_TTL}, a week)")
    p.add_argument("--priority", type=_priority, default=1, metavar="{low,medium,high,urgent}",
                   help="agents run higher priorities first (default medium)")

    p = command("tasks", "list deliveries (pending ones by default)",
                "List deliveries, one line per agent and task, pending ones unless --state says otherwise.")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--agent", metavar="ID", help="only this agent's deliveries")
    target.add_argument("--tag", metavar="T", help="only deliveries of agents that carry this tag")
    p.add_argument("--state", choices=[*(s.value for s in DeliveryState), "pending", "all"],
                   help="a delivery state, pending (default: not finished) or all")
    p.add_argument("--limit", type=int, metavar="N", help="at most N rows (default 1000)")

    p = command("show", "show a task and each of its deliveries",
                "Show a task and each delivery: state, timestamps (UTC), result or error.")
    p.add_argument("task_id", metavar="TASK_ID", type=int)

    p = command("wait", "wait until every delivery of a task has finished",
                "Wait until every delivery of a task has finished, printing progress on stderr. "
                "Exit 0 if all are done, 1 if any failed, expired or was cancelled, "
                "124 on timeout.")
    p.add_argument("task_id", metavar="TASK_ID", type=int)
    p.add_argument("--timeout", metavar="S", type=float, help="give up after S seconds (default: wait forever)")

    p = command("untask", "cancel a task, or everything pending for an agent or a tag",
                "Cancel queued deliveries; agents already holding one are told to cancel it. "
                "Prints how many deliveries were cancelled.")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("task_id", metavar="TASK_ID", type=int, nargs="?", help="one task")
    target.add_argument("--agent", metavar="ID", help="everything pending for this agent")
    target.add_argument("--tag", metavar="T",
                        help="everything pending for agents that carry this tag, and tag tasks aimed at it")

    p = command("action", "send a LimaCharlie-style action object",
                "Send a LimaCharlie reliable-tasking action, e.g. "
                "'{\"action\":\"task\",\"task\":\"os_version\",\"tag\":\"web\"}', "
                "'{\"action\":\"list\"}' or '{\"action\":\"untask\",\"task_id\":12}'. "
                "'-' reads the object from stdin.")
    p.add_argument("object", metavar="JSON", help="the action object, or - for stdin")
    return parser


async def run(
    argv: Sequence[str] | None = None,
    *,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    environ: dict[str, str] | None = None,
) -> int:
    """Run one tetherctl command line; return its exit code."""
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    env = os.environ if environ is None else environ
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or argparse's own usage error (exit 2)
        return exc.code if isinstance(exc.code, int) else EXIT_INPUT
    args.stdin, args.stdout, args.stderr = stdin, stdout, stderr
    url = args.server or env.get("TETHER_URL") or DEFAULT_URL
    token = args.token if args.token is not None else env.get("TETHER_TOKEN", "")
    try:
        method, params = plan(args)
        render = _render_for(method, params)

        def on_event(event: Event) -> None:
            if not args.json:
                print(progress_line(event), file=stderr, flush=True)

        async with ConsoleClient(url, token) as client:
            result = await client.call(method, params, on_event=on_event)
        if args.json:
            _print_raw(result, stdout)
            return _show_wait(result, args) if method == "task.wait" else EXIT_OK
        return render(result, args)
    except ProtocolError as exc:  # refused locally, before anything was sent
        print(f"error: {exc.code.slug} ({int(exc.code)}): {exc.message}", file=stderr)
        return EXIT_INPUT
    except ConsoleError as exc:
        hint = ""
        if isinstance(exc, SessionClosed) and exc.code == ErrorCode.UNAUTHORIZED and not token:
            hint = " (no token given: pass --token or set TETHER_TOKEN)"
        print(f"error: {exc}{hint}", file=stderr)
        return exc.exit_code
    except msgspec.ValidationError as exc:
        print(f"error: the daemon's answer has an unexpected shape ({exc}); try --json", file=stderr)
        return EXIT_INPUT


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return asyncio.run(run(argv))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
