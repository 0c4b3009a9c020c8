"""What tetherctl and the agent say when they cannot reach tetherd (issue 16.8): a bad URL is
bad input (exit 2, nothing sent); a refused connection, or wss:// to a daemon without TLS,
says what to check."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest
from harness import BIN, Tetherd


def run(*argv: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / argv[0]), *argv[1:]], capture_output=True, text=True, env=env, timeout=60)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when this returns: nothing listens there


@pytest.mark.parametrize("url", ["127.0.0.1:8765", "http://127.0.0.1:8765", "ws://127.0.0.1:99999"])
def test_a_url_that_is_not_ws_or_wss_is_bad_input(url: str, env: dict[str, str], tmp_path: Path) -> None:
    ctl = run("tetherctl", "--server", url, "agents", env=env)
    assert ctl.returncode == 2 and "--server:" in ctl.stderr and "Traceback" not in ctl.stderr
    ctl = run("tetherctl", "agents", env={**env, "TETHER_URL": url})
    assert ctl.returncode == 2 and ctl.stderr.startswith("error: TETHER_URL:")
    agent = run("tether-agent", "enroll", "--server", url, "--key", "K", "--state-dir", str(tmp_path / "s"), env=env)
    assert agent.returncode == 2 and "--server:" in agent.stderr


def test_a_refused_connection_asks_whether_tetherd_runs_there(env: dict[str, str], tmp_path: Path) -> None:
    url = f"ws://127.0.0.1:{closed_port()}"
    ctl = run("tetherctl", "--server", url, "agents", env=env)
    assert ctl.returncode == 3
    assert f"is tetherd running and listening on {url.removeprefix('ws://')}?" in ctl.stderr, ctl.stderr
    assert "--server or TETHER_URL" in ctl.stderr
    agent = run("tether-agent", "enroll", "--server", url, "--key", "K", "--state-dir", str(tmp_path / "s"), env=env)
    assert agent.returncode == 1 and "is tetherd running" in agent.stderr and "set-server" in agent.stderr


def test_wss_to_a_daemon_without_tls_says_it_may_not_serve_tls(tetherd: Tetherd, env: dict[str, str],
                                                               tmp_path: Path) -> None:
    url = tetherd.url.replace("ws://", "wss://")
    ctl = run("tetherctl", "--server", url, "--token", tetherd.admin_token, "agents", env=env)
    assert ctl.returncode == 3 and "the daemon may not serve TLS; if it does not, use a ws:// URL" in ctl.stderr
    agent = run("tether-agent", "enroll", "--server", url, "--key", "K", "--state-dir", str(tmp_path / "s"), env=env)
    assert agent.returncode == 1 and "may not serve TLS" in agent.stderr
