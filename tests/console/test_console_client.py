"""tetherctl's side of TLS: ``ConsoleClient(ca_file=...)`` trusts a private CA for wss://,
and a certificate it does not trust is a connect failure that says what to do."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme
from websockets.asyncio.server import ServerConnection, serve

from tether.console.client import CannotConnect, ConsoleClient, ConsoleError, client_context
from tether.protocol import JSON, PROTOCOL_VERSION
from tether.protocol.frames import Welcome


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def wss_url(ca: trustme.CA) -> AsyncIterator[str]:
    """A stand-in daemon on wss:// that welcomes any console."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(context)

    async def welcome(ws: ServerConnection) -> None:
        await ws.recv()
        await ws.send(JSON.encode(Welcome(version=PROTOCOL_VERSION, role="console", session_id="s", server_time=0.0)),
                      text=True)
        await ws.wait_closed()

    async with serve(welcome, "127.0.0.1", 0, ssl=context) as server:
        yield f"wss://127.0.0.1:{server.sockets[0].getsockname()[1]}"


def test_a_ca_file_is_for_wss_urls_and_must_be_readable(tmp_path: Path) -> None:
    assert client_context("ws://127.0.0.1:1", None) is None
    with pytest.raises(ConsoleError, match=r"--ca \(or TETHER_CA\) is for wss:// URLs; ws://127.0.0.1:1 is not one"):
        client_context("ws://127.0.0.1:1", "ca.pem")
    missing = tmp_path / "absent.pem"
    with pytest.raises(ConsoleError, match=f"cannot use CA file {missing} .*: No such file or directory"):
        client_context("wss://127.0.0.1:1", str(missing))
    context = client_context("wss://127.0.0.1:1", None)
    assert context is not None and context.verify_mode == ssl.CERT_REQUIRED
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2


async def test_a_console_trusting_the_ca_connects(wss_url: str, ca: trustme.CA, tmp_path: Path) -> None:
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    async with ConsoleClient(wss_url, "token", ca_file=str(tmp_path / "ca.pem")) as client:
        assert client.welcome is not None and client.welcome.role == "console"


async def test_a_console_not_trusting_the_ca_is_told_to_pass_it(wss_url: str) -> None:
    with pytest.raises(CannotConnect) as caught:
        async with ConsoleClient(wss_url, "token"):
            pass
    assert caught.value.exit_code == 3
    assert "the daemon's certificate was not accepted" in str(caught.value)
    assert "pass --ca FILE or set TETHER_CA" in str(caught.value)
