"""``hooks``: task.create with automation hooks (issue 20).

Five phases on one fresh tetherd, each creating the same ``per_agent`` x 10 single-agent
tasks (to offline agents, many in flight on a few console sessions, as ``create`` does):
no hook; one after-task web hook; five; the five while their target is down (runs pile up
in the outbox, retried with backoff); one before-task web hook (each create waits for its
POST). The web target is an HTTPS server in this process (a certificate from trustme,
pinned by fingerprint). Figures: tasks created per second in each phase, and, for the
after-hook phases, how long the outbox took to be delivered after the last create.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tether.console import ConsoleClient

from .scenarios import BenchError, Options
from .seed import echo_tasks, enroll_fleet, queue_tasks
from .tetherd import Tetherd

SINKS = 10


class _Server(ThreadingHTTPServer):
    request_queue_size = 256
    """The default (5) refuses connections when tetherd opens several at once."""
    daemon_threads = True


class _Target:
    """An HTTPS server answering every POST ``{"result": "success"}``; counts them."""

    def __init__(self) -> None:
        import trustme

        self.count = 0
        lock = threading.Lock()
        target = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with lock:
                    target.count += 1
                body = b'{"result": "success"}'
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        cert = trustme.CA().issue_cert("127.0.0.1")
        self.server = _Server(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        cert.configure_cert(context)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}/"
        self.fingerprint = hashlib.sha256(ssl.PEM_cert_to_DER_cert(cert.cert_chain_pems[0].bytes().decode())).hexdigest()
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


async def _call(url: str, token: str, method: str, params: dict[str, Any]) -> Any:
    async with ConsoleClient(url, token) as console:
        return await console.call(method, params)


def _pending(url: str, token: str) -> int:
    return sum(h["pending"] for h in asyncio.run(_call(url, token, "hook.list", {})))


def run_hooks(opts: Options) -> dict[str, Any]:
    target = _Target()
    figures: dict[str, Any] = {}
    try:
        with Tetherd(opts.settings) as tetherd:
            url, token = tetherd.url, tetherd.admin_token
            sinks = asyncio.run(enroll_fleet(url, tetherd.enroll_key, SINKS, run_id=uuid.uuid4().hex[:8]))
            tasks = echo_tasks(sinks, opts.per_agent, opts.arg_bytes)
            names: list[str] = []

            def hooks(n: int, trigger: str, hook_url: str) -> None:
                for name in names:
                    asyncio.run(_call(url, token, "hook.rm", {"name": name}))
                names.clear()
                for i in range(n):
                    names.append(f"h{i}")
                    asyncio.run(_call(url, token, "hook.add", {
                        "name": f"h{i}", "trigger": trigger, "url": hook_url, "fingerprint": target.fingerprint,
                        "secret": "bench", "timeout": 10}))

            def phase(label: str, delivered: bool) -> None:
                t = time.monotonic()
                created = asyncio.run(queue_tasks(url, token, tasks))
                elapsed = time.monotonic() - t
                if len(created) != len(tasks):
                    raise BenchError(f"{label}: {len(created)} of {len(tasks)} tasks created")
                figures[f"{label}_tasks_per_s"] = round(len(tasks) / elapsed, 1)
                if delivered:
                    deadline = time.monotonic() + opts.timeout
                    while (left := _pending(url, token)) > 0:
                        if time.monotonic() > deadline:
                            raise BenchError(f"{label}: {left} hook runs still pending after {opts.timeout:g} s")
                        time.sleep(0.2)
                    figures[f"{label}_outbox_drained_s"] = round(time.monotonic() - t - elapsed, 2)

            phase("no_hook", False)
            hooks(1, "after-task", target.url)
            phase("after_1", True)
            hooks(5, "after-task", target.url)
            phase("after_5", True)
            hooks(5, "after-task", "https://127.0.0.1:9/")  # nothing listens: every run fails and waits
            phase("after_5_target_down", False)
            figures["after_5_target_down_pending"] = _pending(url, token)
            hooks(1, "before-task", target.url)
            phase("before_1", False)
            figures["tasks_per_phase"] = len(tasks)
            figures["posts_received"] = target.count
            figures["tetherd_log_problems"] = tetherd.log_levels()
            figures["tetherd_exit_code"] = tetherd.stop()
    finally:
        target.close()
    return figures
