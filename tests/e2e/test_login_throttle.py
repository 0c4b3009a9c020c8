"""Bad credentials are slowed per address (issue 15, finding 10), against a real tetherd.

A guesser from one address hammers console logins with wrong tokens: after five free
failures, each one earns a doubling wait during which its logins (and enrollments) are
refused unread with ``login_throttled (4028)`` and a ``retry_after``. Another address logs
in at once; the failures are counted in /metrics and logged at WARNING once per address,
not once per attempt; the right token from the guesser's address works once it waited.
"""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from harness import TEST_SETTINGS, Tetherd, closed_with, wait_until
from websockets.sync.client import ClientConnection, connect

from tether.protocol import MSGPACK, PROTOCOL_VERSION, decode_from_daemon
from tether.protocol.frames import Enroll, Error, Hello, Welcome


@contextmanager
def connection(tetherd: Tetherd, source: str = "127.0.0.1") -> Iterator[ClientConnection]:
    host, port = tetherd.url.removeprefix("ws://").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=10, source_address=(source, 0))
    with connect(tetherd.url, sock=sock) as ws:
        yield ws


def login(tetherd: Tetherd, token: str, source: str = "127.0.0.1") -> tuple[int | None, float | None]:
    """A console login: (the close code, or None when welcomed; the retry_after said)."""
    with connection(tetherd, source) as ws:
        ws.send(MSGPACK.encode(Hello(role="console", version=PROTOCOL_VERSION, token=token)))
        first = decode_from_daemon(ws.recv(timeout=10))
        if isinstance(first, Welcome):
            return None, None
        assert isinstance(first, Error)
        _, code = closed_with(ws)
    return code, first.retry_after


def test_failed_logins_are_slowed_per_address_counted_and_logged_once(
    tmp_path: Path, env: dict[str, str], fault_log: Callable[..., None]
) -> None:
    daemon = Tetherd(tmp_path / "data", env, settings={**TEST_SETTINGS, "login_throttle_exempt": []})
    daemon.start()
    assert daemon.log is not None
    try:
        codes: list[int | None] = []
        retry_afters: list[float | None] = []
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:  # as fast as one client goes, for 3 s
            code, retry_after = login(daemon, "tta_guessed")
            codes.append(code)
            retry_afters.append(retry_after)
        looked_at = codes.count(4010)
        assert codes[:5] == [4010] * 5 and retry_afters[:5] == [None] * 5  # typos are free
        assert 6 <= looked_at <= 8, codes  # then 1 s, 2 s ... between two that are looked at
        assert codes.count(4028) == len(codes) - looked_at > 10
        assert all(r is not None and 0 < r <= 4 for c, r in list(zip(codes, retry_afters, strict=True))[5:] if c == 4028)

        # Another address is not slowed; an enrollment from the guesser's is.
        assert login(daemon, daemon.admin_token, source="127.0.0.2") == (None, None)
        with connection(daemon) as ws:
            ws.send(MSGPACK.encode(Enroll(version=PROTOCOL_VERSION, key=daemon.enroll_key)))
            error, code = closed_with(ws)
        assert code == 4028 and error is not None and "too many failed logins" in error.message

        metrics = daemon.metrics()
        assert metrics['tether_credential_failures_total{kind="console_token"}'] == looked_at
        assert metrics["tether_logins_throttled_total"] == len(codes) - looked_at + 1
        warnings = [line for line in daemon.log.text().splitlines() if "event=credentials_refused" in line]
        assert len(warnings) == 1 and "level=warning" in warnings[0] and "remote=127.0.0.1" in warnings[0]
        refusals = [line for line in daemon.log.text().splitlines() if "event=session_refused" in line]
        assert not [line for line in refusals if "code=4010" in line or "code=4028" in line]  # DEBUG only

        # Once it waited, the right token from the guesser's address logs in.
        wait_until(lambda: login(daemon, daemon.admin_token) == (None, None), timeout=20, what="the login")
    finally:
        daemon.kill(signal.SIGTERM)
    fault_log("Hostile input", "wrong admin tokens from one address as fast as it goes, for 3 s", 1,
              "5 free, then a doubling wait: at most 8 looked at, the rest refused unread 4028 with retry_after; "
              "another address and, after the wait, the right token log in; counted in /metrics; one WARNING line")
