"""The daemon's URL and what to say when it cannot be reached (issue 16.8)."""

from __future__ import annotations

import socket
import ssl

import pytest

from tether.protocol.endpoints import connect_failure, url_problem


@pytest.mark.parametrize("url", ["ws://127.0.0.1:8765", "wss://tetherd.example", "ws://[::1]:8765/"])
def test_daemon_urls(url: str) -> None:
    assert url_problem(url) is None


@pytest.mark.parametrize(("url", "words"), [
    ("127.0.0.1:8765", "is not a ws:// or wss:// URL; give e.g. ws://127.0.0.1:8765"),
    ("tetherd", "give e.g. ws://tetherd"),
    ("http://127.0.0.1:8765", "give e.g. ws://127.0.0.1:8765"),
    ("ws://", "is not a ws:// or wss:// URL"),
    ("ws://127.0.0.1:99999", "is not a valid URL (Port out of range"),
    ("ws://127.0.0.1:0", "is not a daemon URL"),
    ("ws://127.0.0.1:8765/agents?x=1", "nothing after the port"),
])
def test_not_daemon_urls(url: str, words: str) -> None:
    assert words in (url_problem(url) or "")


def eof() -> OSError:
    exc = OSError("did not receive a valid HTTP response")
    exc.__cause__ = EOFError()
    return exc


@pytest.mark.parametrize(("exc", "url", "words"), [
    (ConnectionRefusedError(111, "Connection refused"), "ws://127.0.0.1:1",
     "connection refused: is tetherd running and listening on 127.0.0.1:1? (check --server or TETHER_URL"),
    (OSError("Multiple exceptions: [Errno 111] Connect call failed"), "wss://h", "listening on h:443?"),
    (socket.gaierror(-2, "Name or service not known"), "ws://nowhere.invalid", "cannot resolve 'nowhere.invalid'"),
    (TimeoutError(), "ws://10.0.0.1:8765", "no answer from 10.0.0.1:8765 in time"),
    (ConnectionResetError(), "wss://127.0.0.1:8765", "ConnectionResetError: the daemon may not serve TLS"),
    (ssl.SSLError(1, "record layer failure"), "wss://h:1", "the daemon may not serve TLS"),
    (eof(), "ws://h:1", "did not receive a valid HTTP response: if tetherd serves TLS, use a wss:// URL"),
    (OSError("something else"), "ws://h:1", "something else"),
])
def test_connect_failure_says_what_to_check(exc: BaseException, url: str, words: str) -> None:
    assert words in connect_failure(exc, url)


def test_connect_failure_names_where_the_url_is_set() -> None:
    said = connect_failure(ConnectionRefusedError(), "ws://h:1", "the server URL (tether-agent set-server URL)")
    assert said.endswith("(check the server URL (tether-agent set-server URL), and tetherd's `listen`)")
