"""tetherd's HTTP side (issue 15, finding 12), against a real tetherd: browser origins,
known paths and methods only, one Content-Type, /metrics behind an optional token."""

from __future__ import annotations

import http.client
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from harness import TEST_SETTINGS, Tetherd
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tether.protocol import MSGPACK, PROTOCOL_VERSION, decode_from_daemon
from tether.protocol.frames import Hello, Welcome

CONSOLE_ORIGIN = "https://console.example"
METRICS_TOKEN = "m3trics-s3cret"


@pytest.fixture
def daemon(tmp_path: Path, env: dict[str, str]) -> Iterator[Tetherd]:
    tetherd = Tetherd(tmp_path / "data", env, settings={
        **TEST_SETTINGS, "allowed_origins": [CONSOLE_ORIGIN], "metrics_token": METRICS_TOKEN})
    tetherd.start()
    yield tetherd
    tetherd.kill(signal.SIGTERM)


def get(tetherd: Tetherd, path: str, method: str = "GET",
        headers: dict[str, str] | None = None) -> tuple[int, list[tuple[str, str]], str]:
    host, port = tetherd.url.removeprefix("ws://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.getheaders(), response.read().decode()
    finally:
        conn.close()


def console_session(tetherd: Tetherd, origin: str | None) -> bool:
    """Whether a console with this Origin header (None: none) gets a session."""
    headers = {"Origin": origin} if origin else None
    try:
        with connect(tetherd.url, additional_headers=headers) as ws:
            ws.send(MSGPACK.encode(Hello(role="console", version=PROTOCOL_VERSION, token=tetherd.admin_token)))
            return isinstance(decode_from_daemon(ws.recv(timeout=10)), Welcome)
    except InvalidStatus as exc:
        assert exc.response.status_code == 403
        return False


def test_a_web_page_from_another_origin_cannot_open_a_session(
    daemon: Tetherd, fault_log: Callable[..., None]
) -> None:
    assert console_session(daemon, "https://evil.example") is False
    assert console_session(daemon, "null") is False  # a sandboxed page, a file:// page
    assert console_session(daemon, CONSOLE_ORIGIN) is True  # allowed_origins
    assert console_session(daemon, None) is True  # tetherctl and agents send no Origin
    fault_log("Hostile input", "WebSocket upgrades with a browser Origin not in allowed_origins", 2,
              "refused 403 before any frame; a listed origin and clients without Origin get sessions")


def test_only_known_paths_and_get_are_answered(daemon: Tetherd) -> None:
    auth = {"Authorization": f"Bearer {METRICS_TOKEN}"}
    assert get(daemon, "/nope")[0] == 404
    assert get(daemon, "/metrics/")[0] == 404
    status, headers, _ = get(daemon, "/metrics", "POST", auth)
    assert status == 405 and ("Allow", "GET") in headers
    assert get(daemon, "/healthz", "DELETE")[0] == 405
    assert get(daemon, "/healthz")[:3:2] == (200, "ok\n")
    assert get(daemon, "/")[0] == 426  # no upgrade: "connect with a WebSocket client"


def test_metrics_answers_with_one_content_type_and_needs_its_token(daemon: Tetherd) -> None:
    status, headers, text = get(daemon, "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert status == 200 and "tether_sessions_open" in text
    assert [v for k, v in headers if k.lower() == "content-type"] == ["text/plain; version=0.0.4; charset=utf-8"]
    for authorization in (None, "Bearer wrong", f"Basic {METRICS_TOKEN}", f"Bearer {METRICS_TOKEN}x"):
        status, headers, text = get(daemon, "/metrics", headers={"Authorization": authorization} if authorization else {})
        assert status == 401, authorization
        assert ("WWW-Authenticate", 'Bearer realm="tetherd metrics"') in headers
        assert "tether_" not in text
