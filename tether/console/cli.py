"""tetherctl: the admin console of tetherd (``tetherctl = tether.console.cli:main``).

tetherctl opens a ``console`` session (JSON text frames, see ``docs/protocol.md``) with an
admin token and sends one request per invocation. It depends only on the standard library,
msgspec, websockets and :mod:`tether.protocol`, so it runs on any machine that has the
agent's dependencies, without the daemon extra.

Every command prints a readable table, or the daemon's raw result with ``--json``.
The server URL and the token come from ``--server``/``--token`` or the environment
variables ``TETHER_URL``/``TETHER_TOKEN``; for a wss:// server signed by a private CA,
``--ca FILE`` or ``TETHER_CA`` names the CA to trust.

Exit codes:

* ``0``   ok
* ``1``   the task failed (``wait``: a delivery failed, expired or was cancelled)
* ``2``   bad input, or an error answered by the daemon (``error: NAME (CODE): MESSAGE``)
* ``3``   cannot connect, the daemon refused the handshake (e.g. ``unauthorized (4010)``),
  or the session ended before the answer
* ``124`` ``wait`` timed out: some delivery has not finished
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Sequence
from typing import Any, TextIO, cast

import msgspec

from tether.protocol import ErrorCode, ProtocolError
from tether.protocol.endpoints import url_problem
from tether.protocol.errors import DaemonError, SessionClosed
from tether.protocol.frames import Event
from tether.protocol.methods import TASK_WAIT, TASK_WATCH

from .client import DEFAULT_URL, EXIT_INPUT, EXIT_OK, ConsoleClient, ConsoleError, exit_code
from .parser import build_parser
from .plan import plan
from .render import json_text, progress_line, visible, visible_lines
from .results import renders, show_wait
from .watch import Watch


def _print_raw(result: Any, out: TextIO) -> None:
    print(json_text(result, sort_keys=False), file=out)


class _TerminalSafe:
    """What tetherctl writes to a stream, with the characters a terminal would act on
    escaped (:func:`~.render.visible_lines`): the last guard for agent text that a
    renderer did not escape itself (newlines and tabs pass: renderers lay text out with them)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        return self._stream.write(visible_lines(text))

    def flush(self) -> None:
        self._stream.flush()


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
    raw_out = stdout or sys.stdout  # for watch's own cursor moves (it escapes agents' text itself)
    stdout = cast(TextIO, _TerminalSafe(raw_out))
    stderr = cast(TextIO, _TerminalSafe(stderr or sys.stderr))
    env = os.environ if environ is None else environ
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or argparse's own usage error (exit 2)
        return exc.code if isinstance(exc.code, int) else EXIT_INPUT
    args.stdin, args.stdout, args.stderr = stdin, stdout, stderr
    url = args.server or env.get("TETHER_URL") or DEFAULT_URL
    problem = url_problem(url)
    if problem is not None:  # bad input, refused before anything is sent
        print(f"error: {'--server' if args.server else 'TETHER_URL'}: {problem}", file=stderr)
        return EXIT_INPUT
    token = args.token if args.token is not None else env.get("TETHER_TOKEN", "")
    # TETHER_CA is for the wss:// server it was set for; an explicit --ca must fit the URL.
    ca_file = args.ca or (env.get("TETHER_CA") if url.startswith("wss://") else None)
    try:
        request = plan(args)

        def on_event(event: Event) -> None:
            if not args.json:
                print(progress_line(event), file=stderr, flush=True)

        if request.answers is TASK_WATCH:
            tty = bool(getattr(raw_out, "isatty", lambda: False)()) and env.get("TERM") != "dumb"
            args.watch = Watch(raw_out if tty else stdout, tty=tty, as_json=args.json)
            on_event = args.watch
        async with ConsoleClient(url, token, ca_file=ca_file) as client:
            result = await client.call(request.method, request.params, on_event=on_event)
        if request.answers is TASK_WATCH:
            return renders[TASK_WATCH](result, args)
        if args.json:
            _print_raw(result, stdout)
            return show_wait(result, args) if request.answers is TASK_WAIT else EXIT_OK
        return renders[request.answers](result, args)
    except ProtocolError as exc:  # refused locally, before anything was sent
        print(f"error: {exc.code.slug} ({int(exc.code)}): {visible(exc.message)}", file=stderr)
        return EXIT_INPUT
    except (ConsoleError, DaemonError) as exc:
        hint = ""
        if isinstance(exc, SessionClosed) and exc.code == ErrorCode.UNAUTHORIZED and not token:
            hint = " (no token given: pass --token or set TETHER_TOKEN)"
        print(f"error: {visible(exc)}{hint}", file=stderr)
        return exit_code(exc)
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
