"""Limits on one peer: connections per address (4029 with a retry_after) and frames per
session (1429, reading paused, nothing lost), and everyone else keeps being served."""

from __future__ import annotations

import signal
import socket
import threading
import time
import urllib.error
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
from harness import TEST_SETTINGS, AgentProc, Tetherd, closed_with, wait_until
from websockets.sync.client import ClientConnection, connect

from tether.protocol import MSGPACK, PROTOCOL_VERSION, Hello, Request
from tether.protocol.codec import decode_from_daemon
from tether.protocol.frames import Error, Response


def start_tetherd(tmp_path: Path, env: dict[str, str], open_files: int | None = None, **settings: Any) -> Tetherd:
    daemon = Tetherd(tmp_path / "data", env, settings={**TEST_SETTINGS, **settings})
    daemon.open_files = open_files
    daemon.start()
    return daemon


@pytest.fixture
def limited(tmp_path: Path, env: dict[str, str]) -> Iterator[Tetherd]:
    """Three connections per address, loopback not exempt (the tests all come from it)."""
    daemon = start_tetherd(tmp_path, env, max_sessions_per_address=3, session_limit_exempt=[])
    yield daemon
    daemon.kill(signal.SIGTERM)


_OPEN = ExitStack()


@pytest.fixture(autouse=True)
def _close_connections() -> Iterator[None]:
    yield
    _OPEN.close()


def scraped(tetherd: Tetherd) -> tuple[dict[str, float], int]:
    """/metrics, once the address has room for the scrape's own connection; and how many
    scrapes were refused (429, with Retry-After) before."""
    refused = 0

    def scrape() -> dict[str, float] | None:
        nonlocal refused
        try:
            return tetherd.metrics()
        except urllib.error.HTTPError as exc:
            assert exc.code == 429 and exc.headers["Retry-After"] == "10"
            refused += 1
            return None

    return wait_until(scrape, what="a /metrics scrape"), refused


def console(tetherd: Tetherd) -> ClientConnection:
    """A console session (closed at the end of the test if the test does not close it)."""
    ws = _OPEN.enter_context(connect(tetherd.url, max_size=None))
    ws.send(MSGPACK.encode(Hello(role="console", version=PROTOCOL_VERSION, token=tetherd.admin_token)))
    assert type(decode_from_daemon(ws.recv(timeout=10))).__name__ == "Welcome"
    return ws


def test_connections_over_the_per_address_limit_are_refused_with_retry_after(
    limited: Tetherd, fault_log: Callable[..., None]
) -> None:
    open_ = [console(limited) for _ in range(3)]
    try:
        with connect(limited.url) as fourth:
            error, code = closed_with(fourth)
        assert code == 4029
        assert error is not None and error.code == 4029 and error.retry_after == 10.0
        assert "too many connections from 127.0.0.1 (limit 3)" in error.message
        # The three open ones were not disturbed, and tetherctl gets in once one closes.
        open_[0].send(MSGPACK.encode(Request(id=1, method="agents.list", params={})))
        assert isinstance(decode_from_daemon(open_[0].recv(timeout=10)), Response)
        open_.pop().close()
        # (/metrics is scraped from the same address too, and refused 429 while it is full.)
        metrics, refused = scraped(limited)
        assert metrics['tether_connections_shed_total{reason="address"}'] == 1 + refused
        deadline = time.monotonic() + 10
        while (rc := limited.ctl("agents", check=False)[0]) != 0 and time.monotonic() < deadline:
            time.sleep(0.1)  # the close is seen by tetherd a moment after the client returns
        assert rc == 0
    finally:
        for ws in open_:
            ws.close()
    fault_log("Hostile input", "a 4th connection from one address (limit 3, loopback not exempt)", 1,
              "refused 4029 with retry_after 10 s; the open ones undisturbed; a new one gets in after a close")


def test_an_agent_shed_for_its_address_waits_the_retry_after_and_gets_in(
    limited: Tetherd, tmp_path: Path, env: dict[str, str], fault_log: Callable[..., None]
) -> None:
    agent = AgentProc("shed", tmp_path, limited, env)
    agent.enroll()
    blockers = [console(limited) for _ in range(3)]
    try:
        agent.start(wait=False)
        assert agent.log is not None
        agent.log.wait_for(r"code=4029 .*delay=1\d\.", timeout=15)
        for ws in blockers:
            ws.close()
        blockers = []
        time.sleep(0.5)  # tetherd sees the closes
        task_id = limited.task("record", "--agent", agent.agent_id)
        # Its backoff includes the daemon's retry_after (10 s), then it is served.
        assert limited.ctl("wait", str(task_id), "--timeout", "40")[0] == 0
    finally:
        for ws in blockers:
            ws.close()
        agent.kill(signal.SIGKILL)
    fault_log("Hostile input", "an agent shed for its address's limit", 1,
              "it waits the retry_after (backoff >= 10 s), connects when there is room, and runs its task")


def test_loopback_is_exempt_by_default(tmp_path: Path, env: dict[str, str]) -> None:
    daemon = start_tetherd(tmp_path, env, max_sessions_per_address=2)
    try:
        sessions = [console(daemon) for _ in range(6)]
        for ws in sessions:
            ws.close()
        assert daemon.metrics()['tether_connections_shed_total{reason="address"}'] == 0
    finally:
        daemon.kill(signal.SIGTERM)


def test_a_flooding_session_is_slowed_loses_nothing_and_others_are_served(
    tmp_path: Path, env: dict[str, str], fault_log: Callable[..., None]
) -> None:
    daemon = start_tetherd(tmp_path, env, max_frames_per_second=1000, frame_burst=500)
    agent = AgentProc("bystander", tmp_path, daemon, env)
    agent.enroll()
    agent.start()
    try:
        flood = console(daemon)
        sent = 3000
        answers: list[Any] = []

        def read() -> None:
            while len([a for a in answers if isinstance(a, Response)]) < sent:
                answers.append(decode_from_daemon(flood.recv(timeout=30)))

        reader = threading.Thread(target=read)
        reader.start()
        started = time.monotonic()
        for i in range(sent):  # as fast as the socket takes them
            flood.send(MSGPACK.encode(Request(id=i, method="agents.list", params={})))
        # Meanwhile a bystander agent's tasks go through at their usual pace.
        bystander_started = time.monotonic()
        task_id = daemon.task("record", "--agent", agent.agent_id)
        assert daemon.ctl("wait", str(task_id), "--timeout", "30")[0] == 0
        bystander = time.monotonic() - bystander_started
        reader.join(timeout=60)
        flooded = time.monotonic() - started
        flood.close()

        responses = {a.id for a in answers if isinstance(a, Response)}
        limited = [a for a in answers if isinstance(a, Error)]
        assert responses == set(range(sent)), "every request of the flood was answered"
        assert limited and all(e.code == 1429 and e.retry_after and e.retry_after > 0 for e in limited)
        assert "reading paused" in limited[0].message
        # 3,000 frames at 1,000 a second after a burst of 500 take at least 2.5 s.
        assert flooded >= 2.4
        assert bystander < 5.0, f"the bystander waited {bystander:.1f} s"
        assert daemon.metrics()["tether_sessions_throttled_total"] >= 1
    finally:
        agent.kill(signal.SIGKILL)
        daemon.kill(signal.SIGTERM)
    fault_log("Hostile input", f"a console session flooding {sent} requests as fast as the socket takes them "
              "(limit 1,000 frames/s)", 1,
              "told 1429 with retry_after, slowed to the rate, every request answered; a bystander agent "
              "served in < 5 s")


def test_garbage_costs_more_than_good_frames(
    tmp_path: Path, env: dict[str, str], fault_log: Callable[..., None]
) -> None:
    """With bad_frame_cost 100 and 1,000 frames a second, 30 garbage frames beyond the
    burst take about 3 s; tetherd tells the sender and keeps the session."""
    daemon = start_tetherd(tmp_path, env, max_frames_per_second=1000, frame_burst=1000)
    try:
        ws = console(daemon)
        started = time.monotonic()
        for _ in range(40):
            ws.send(b"\xc1 not msgpack")
        codes = []
        while len([c for c in codes if c == 1100]) < 40:
            codes.append(decode_from_daemon(ws.recv(timeout=30)).code)  # type: ignore[attr-defined]
        elapsed = time.monotonic() - started
        assert 1429 in codes
        assert elapsed >= 2.5
        ws.send(MSGPACK.encode(Request(id=7, method="agents.list", params={})))
        while not isinstance(answer := decode_from_daemon(ws.recv(timeout=30)), Response):
            pass
        assert answer.id == 7
        ws.close()
    finally:
        daemon.kill(signal.SIGTERM)
    fault_log("Hostile input", "40 garbage frames in a burst (a bad frame costs 100)", 1,
              "1429, slowed to ~10 bad frames/s, every frame answered 1100, the session stays usable")


@contextmanager
def half_open(url: str, count: int, source: Callable[[int], str]) -> Iterator[list[socket.socket]]:
    """``count`` TCP connections to tetherd that never send a byte (no HTTP upgrade), the
    ``i``-th from address ``source(i)`` (any of 127.0.0.0/8 is this host); closed at the end."""
    host, port = url.removeprefix("ws://").rsplit(":", 1)
    sockets: list[socket.socket] = []
    try:
        for i in range(count):
            sock = socket.create_connection((host, int(port)), timeout=10, source_address=(source(i), 0))
            sock.setblocking(False)  # closed_by_peer() looks without waiting
            sockets.append(sock)
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


def closed_by_peer(sock: socket.socket) -> bool:
    """tetherd closed this connection (it reads as ended or reset), without reading from it."""
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


def test_half_open_connections_from_one_address_cannot_starve_a_bystander(
    tmp_path: Path, env: dict[str, str], fault_log: Callable[..., None]
) -> None:
    """tetherd with 256 file descriptors; 300 connections from 127.0.0.2 that never upgrade
    (a limit of 20 per address, loopback not exempt). The bystanders come from 127.0.0.1."""
    daemon = start_tetherd(tmp_path, env, open_files=256, max_sessions_per_address=20, session_limit_exempt=[])
    agent = AgentProc("bystander", tmp_path, daemon, env)
    agent.enroll()
    try:
        assert daemon.log is not None
        daemon.log.wait_for(r"event=listening .* max_connections=156 open_files=256 per_address=20")
        with half_open(daemon.url, 300, lambda i: "127.0.0.2"):
            wait_until(lambda: daemon.metrics()['tether_connections_shed_total{reason="address"}'] >= 300 - 20,
                       what="the connections past the limit shed")
            agent.start()
            task_id = daemon.task("record", "--agent", agent.agent_id)
            assert daemon.ctl("wait", str(task_id), "--timeout", "30")[0] == 0
            assert daemon.ctl("agents")[0] == 0
        warnings = [line for line in daemon.log.text().splitlines() if "event=connections_shed" in line]
        assert warnings and "level=warning" in warnings[0] and "reason=address" in warnings[0]
        assert "remote=127.0.0.2" in warnings[0] and len(warnings) <= 2, warnings  # not one per connection
    finally:
        agent.kill(signal.SIGKILL)
        daemon.kill(signal.SIGTERM)
    fault_log("Hostile input", "300 half-open connections (no HTTP upgrade) from one address, limit 20, "
              "tetherd with 256 fds", 1,
              "counted from accept: all but 20 (+8 kept to be told 4029) shed at once, one warning logged, "
              "/metrics counts them; a bystander agent and tetherctl are served")


def test_the_limit_on_all_connections_sheds_and_keeps_tetherd_serving(
    tmp_path: Path, env: dict[str, str], fault_log: Callable[..., None]
) -> None:
    """max_connections 40: 60 half-open connections from 60 addresses (each under its
    address's limit) fill it; the rest are shed, the sessions already open go on."""
    daemon = start_tetherd(tmp_path, env, max_connections=40, session_limit_exempt=[])
    try:
        ws = console(daemon)
        assert daemon.log is not None
        with half_open(daemon.url, 60, lambda i: f"127.0.1.{i + 1}") as sockets:
            daemon.log.wait_for(r"level=warning .*event=connections_shed reason=total .*limit=40")
            wait_until(lambda: sum(map(closed_by_peer, sockets)) >= 60 - 39, what="the connections past 40 closed")
            ws.send(MSGPACK.encode(Request(id=1, method="agents.list", params={})))
            assert isinstance(decode_from_daemon(ws.recv(timeout=10)), Response)
        # (/metrics is scraped over a connection too: once the half-open ones are gone.)
        wait_until(lambda: daemon.metrics()['tether_connections_shed_total{reason="total"}'] >= 60 - 40,
                   what="the connections past 40 counted")
        assert daemon.metrics()["tether_connections_open"] <= 3
    finally:
        daemon.kill(signal.SIGTERM)
    fault_log("Hostile input", "60 half-open connections from 60 addresses against max_connections 40", 1,
              "the connections past 40 closed at accept, logged and counted; an open console session is served")
