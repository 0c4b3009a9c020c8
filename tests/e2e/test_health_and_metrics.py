"""What an operator running tetherd sees: health, metrics, systemd readiness and watchdog."""

from __future__ import annotations

import signal
import socket
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from harness import AgentProc, Tetherd


def http_get(tetherd: Tetherd, path: str) -> tuple[int, str, str]:
    url = tetherd.url.replace("ws://", "http://") + path
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.headers.get("Content-Type", ""), exc.read().decode()


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.split(" ")[0] == name:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in metrics:\n{text}")


def test_healthz_metrics_and_plain_http(tetherd: Tetherd, make_agent: Callable[..., AgentProc]) -> None:
    assert http_get(tetherd, "/healthz")[::2] == (200, "ok\n")
    a = make_agent("a", start=True)
    task_id = tetherd.task("record --m 1", "--agent", a.agent_id)
    assert tetherd.ctl("wait", str(task_id), "--timeout", "30")[0] == 0
    status, ctype, text = http_get(tetherd, "/metrics")
    assert status == 200 and ctype.startswith("text/plain")
    assert metric(text, 'tether_sessions_open{role="agent"}') == 1
    assert metric(text, 'tether_deliveries_total{state="done"}') == 1
    assert metric(text, 'tether_deliveries_total{state="queued"}') == 1
    assert metric(text, 'tether_frames_total{direction="in"}') >= 4  # hello, ack, progress, result
    assert metric(text, "tether_deliveries_pushed_total") == 1
    assert metric(text, "tether_asyncio_tasks") > 0
    assert metric(text, "tether_store_commits_total") >= 1
    assert metric(text, "tether_store_commit_seconds_total") > 0
    assert http_get(tetherd, "/nope")[0] == 404
    assert http_get(tetherd, "/")[0] == 426  # the WebSocket endpoint, asked without an upgrade


def test_systemd_ready_watchdog_and_stopping(tmp_path: Path, env: dict[str, str]) -> None:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(15)
    try:
        daemon = Tetherd(tmp_path / "data", {**env, "NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "400000"})
        daemon.start()
        seen: list[str] = []
        while "WATCHDOG=1" not in seen or "READY=1" not in seen:
            seen.append(sock.recv(256).decode())
        assert seen[0] == "READY=1"  # ready first, once listening
        daemon.kill(signal.SIGTERM)
        while "STOPPING=1" not in seen:
            seen.append(sock.recv(256).decode())
    finally:
        sock.close()
