"""End-to-end harness: a real ``tetherd`` process, real ``tether-agent`` processes and
``tetherctl`` invocations, on a temporary data directory and an ephemeral port.

Synchronisation is by events the processes print (log lines read by a thread) or by
``tetherctl wait``; where a state can only be observed by asking, ``wait_until`` asks
again until a bounded deadline and fails with what it last saw.
"""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tether.protocol import MSGPACK, PROTOCOL_VERSION
from tether.protocol.codec import decode_from_daemon
from tether.protocol.frames import Enroll, Enrolled, Error, Hello, Welcome

BIN = Path(sys.executable).parent
COMMANDS = Path(__file__).parent / "commands.py"


class LogWatcher:
    """Collects a process's stderr lines in a thread; ``wait_for`` blocks on a condition."""

    def __init__(self, stream: Any, name: str) -> None:
        self.lines: list[str] = []
        self.name = name
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: Any) -> None:
        for raw in stream:
            line = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self.lines.append("<eof>")
            self._cond.notify_all()

    def wait_for(self, pattern: str, timeout: float = 15.0, start: int = 0) -> re.Match[str]:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines[start:]:
                    m = regex.search(line)
                    if m:
                        return m
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.lines and self.lines[-1] == "<eof>"):
                    tail = "\n".join(self.lines[-30:])
                    raise AssertionError(f"{self.name}: no line matching {pattern!r} within {timeout}s:\n{tail}")
                self._cond.wait(remaining)

    def close(self) -> None:
        """After the process ended: wait for the last lines."""
        self._thread.join(timeout=10)

    def mark(self) -> int:
        with self._cond:
            return len(self.lines)

    def text(self) -> str:
        with self._cond:
            return "\n".join(self.lines)


def closed_with(ws: Any, timeout: float = 10.0) -> tuple[Any, int | None]:
    """Read a (sync websockets) connection until the daemon closes it: the last error frame
    it sent before closing (or None), and the close code."""


    error = None
    try:
        while True:
            frame = decode_from_daemon(ws.recv(timeout=timeout))
            if isinstance(frame, Error):
                error = frame
    except ConnectionClosed:
        pass
    assert ws.protocol.close_rcvd is not None, "the daemon did not close the connection"
    return error, ws.protocol.close_rcvd.code


@contextmanager
def raw_agent_session(tetherd: Tetherd, machine_uuid: str = "raw-agent") -> Iterator[tuple[ClientConnection, str]]:
    """A newly enrolled agent's session, raw (the test writes its frames itself, as a hostile
    agent would): the connection and the agent's id."""
    with connect(tetherd.url, max_size=None) as ws:
        ws.send(MSGPACK.encode(Enroll(version=PROTOCOL_VERSION, key=tetherd.enroll_key, machine_uuid=machine_uuid)))
        enrolled = decode_from_daemon(ws.recv(timeout=10))
    assert isinstance(enrolled, Enrolled)
    with connect(tetherd.url, max_size=None) as ws:
        ws.send(MSGPACK.encode(Hello(role="agent", version=PROTOCOL_VERSION, agent_id=enrolled.agent_id,
                                     token=enrolled.token, features=["batch"])))
        assert isinstance(decode_from_daemon(ws.recv(timeout=10)), Welcome)
        yield ws, enrolled.agent_id


def wait_until(predicate: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")


def _reap(proc: subprocess.Popen[bytes], log: LogWatcher) -> int:
    code = proc.wait(timeout=30)
    log.close()
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()
    return code


def read_credentials(stdout: Any) -> dict[str, str]:
    """The block a first ``tetherd serve`` prints (``  admin token:    tta_...``), by label."""
    creds: dict[str, str] = {}
    for raw in stdout:
        line = raw.decode() if isinstance(raw, bytes) else raw
        label, sep, value = line.strip().partition(":")
        if sep and label in ("admin token", "enrollment key", "url"):
            creds[label] = value.strip()
        if len(creds) == 3:
            return creds
    raise AssertionError(f"tetherd printed no credentials block (got {creds})")


TEST_SETTINGS = {"min_interval": 0.5, "login_throttle_exempt": ["127.0.0.0/8", "::1/128"]}
"""tetherd.toml for the end-to-end tests: the polling floor lowered from 10 s so polling
and schedule tests take seconds (tetherd's ``min_interval`` setting exists for this); and
failed logins from this host not slowed: every test's many clients share 127.0.0.1, and
some fail logins on purpose (``test_login_throttle.py`` turns the throttle back on)."""


class Tetherd:
    def __init__(self, data_dir: Path, env: dict[str, str], settings: dict[str, Any] | None = None) -> None:
        self.data_dir = data_dir
        self.env = env
        self.settings = TEST_SETTINGS if settings is None else settings
        self.proc: subprocess.Popen[bytes] | None = None
        self.log: LogWatcher | None = None
        self.url = ""
        self.port = 0
        self.admin_token = ""
        self.enroll_key = ""
        self._tagging_key = ""
        self.extra_args: list[str] = []
        self.open_files: int | None = None
        """Start tetherd with this RLIMIT_NOFILE (soft and hard), e.g. to run it out of fds."""

    @property
    def tagging_key(self) -> str:
        """An enrollment key that lets agents ask for tags (the first start's does not)."""
        if not self._tagging_key:
            self._tagging_key = self.ctl("key", "create", "--allow-requested-tags")[1]["key"]
        return self._tagging_key

    def start(self, *extra: str) -> None:
        listen = f"127.0.0.1:{self.port}"
        # Not --json: that makes the log JSON lines, and the tests wait on logfmt lines.
        args = [str(BIN / "tetherd"), "serve", "--data-dir", str(self.data_dir), "--listen", listen,
                *self.extra_args, *extra]
        if self.settings:
            config = self.data_dir.with_name(self.data_dir.name + "-tetherd.toml")
            config.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in self.settings.items()))
            args += ["--config", str(config)]
        limit = self.open_files
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.env,
                                     preexec_fn=None if limit is None else lambda: resource.setrlimit(
                                         resource.RLIMIT_NOFILE, (limit, limit)))
        self.log = LogWatcher(self.proc.stderr, "tetherd")
        m = self.log.wait_for(r"event=listening url=(wss?://\S+)")
        self.url = m.group(1)
        self.port = int(self.url.rsplit(":", 1)[1])
        if not self.admin_token:
            creds = read_credentials(self.proc.stdout)
            self.admin_token = creds["admin token"]
            self.enroll_key = creds["enrollment key"]
            assert creds["url"] == self.url

    def kill(self, sig: int = signal.SIGKILL) -> int:
        assert self.proc is not None and self.log is not None
        self.proc.send_signal(sig)
        return _reap(self.proc, self.log)

    def ctl(self, *args: str, check: bool = True, timeout: float = 60) -> tuple[int, Any]:
        """Run tetherctl with --json; return (exit code, parsed stdout or the stderr text)."""
        env = {**self.env, "TETHER_URL": self.url, "TETHER_TOKEN": self.admin_token}
        proc = subprocess.run([str(BIN / "tetherctl"), *args, "--json"], capture_output=True, text=True,
                              env=env, timeout=timeout)
        out: Any = proc.stderr
        if proc.stdout.strip():
            try:
                out = json.loads(proc.stdout)
            except json.JSONDecodeError:
                out = proc.stdout
        if check and proc.returncode != 0:
            raise AssertionError(f"tetherctl {' '.join(args)} exited {proc.returncode}: {proc.stdout}{proc.stderr}")
        return proc.returncode, out

    def task(self, command: str, *target: str) -> int:
        _, out = self.ctl("task", command, *target)
        return int(out["task_id"])

    def show(self, task_id: int, *extra: str) -> dict[str, Any]:
        return self.ctl("show", str(task_id), *extra)[1]  # type: ignore[no-any-return]

    def metrics(self) -> dict[str, float]:
        """``GET /metrics`` as ``{'name{labels}': value}``."""
        url = self.url.replace("ws://", "http://") + "/metrics"
        with urllib.request.urlopen(url, timeout=10) as resp:
            text = resp.read().decode()
        return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
                for line in text.splitlines() if line and not line.startswith("#")}


class AgentProc:
    def __init__(self, name: str, root: Path, tetherd: Tetherd, env: dict[str, str]) -> None:
        self.name = name
        self.state_dir = root / f"agent-{name}"
        self.exec_log = root / f"agent-{name}.exec.log"
        self.tetherd = tetherd
        self.env = {**env, "TETHER_TEST_EXEC_LOG": str(self.exec_log)}
        self.agent_id = ""
        self.proc: subprocess.Popen[bytes] | None = None
        self.log: LogWatcher | None = None

    def enroll(self, *tags: str, key: str | None = None, check: bool = True,
               extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
        """``extra``: more options, e.g. TLS files (``--ca FILE``). With ``tags`` and no
        ``key``, a key that allows requested tags."""
        key = key or (self.tetherd.tagging_key if tags else self.tetherd.enroll_key)
        args = [str(BIN / "tether-agent"), "enroll", "--server", self.tetherd.url,
                "--key", key, "--state-dir", str(self.state_dir),
                "--machine-uuid", f"test-machine-{self.name}-{os.getpid()}", "--json", *extra]
        for tag in tags:
            args += ["--tag", tag]
        proc = subprocess.run(args, capture_output=True, text=True, env=self.env, timeout=30)
        if check:
            assert proc.returncode == 0, proc.stderr
            self.agent_id = json.loads(proc.stdout)["agent_id"]
        return proc

    def start(self, *extra: str, wait: bool = True) -> None:
        """Start ``tether-agent run``; with ``wait``, return once its session is open."""
        args = [str(BIN / "tether-agent"), "run", "--state-dir", str(self.state_dir),
                "--commands", f"{COMMANDS}:agent", *extra]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=self.env)
        self.log = LogWatcher(self.proc.stderr, f"agent-{self.name}")
        if wait:
            self.log.wait_for(r"session_open")

    def kill(self, sig: int = signal.SIGKILL) -> int:
        assert self.proc is not None and self.log is not None
        self.proc.send_signal(sig)
        return _reap(self.proc, self.log)

    def wait_exit(self, timeout: float = 30) -> int:
        """Wait for the agent to stop by itself."""
        assert self.proc is not None and self.log is not None
        self.proc.wait(timeout=timeout)
        return _reap(self.proc, self.log)

    def status(self) -> dict[str, Any]:
        proc = subprocess.run([str(BIN / "tether-agent"), "status", "--state-dir", str(self.state_dir), "--json"],
                              capture_output=True, text=True, env=self.env, timeout=30)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)  # type: ignore[no-any-return]

    def identity(self) -> dict[str, str]:
        """The agent id and token the agent keeps in its journal (as a thief of the file would)."""
        conn = sqlite3.connect(self.state_dir / "journal.sqlite")
        try:
            tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            for table in tables:
                cols = [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
                if "token" in cols and "agent_id" in cols:
                    row = conn.execute(f"SELECT agent_id, token FROM {table}").fetchone()
                    return {"agent_id": row[0], "token": row[1]}
        finally:
            conn.close()
        raise AssertionError("no identity in the agent journal")

    def runs(self) -> list[dict[str, Any]]:
        """Every execution the agent's test commands recorded, in order."""
        if not self.exec_log.exists():
            return []
        return [json.loads(line) for line in self.exec_log.read_text().splitlines() if line.strip()]


