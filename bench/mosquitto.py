"""A Mosquitto broker process (the Debian ``mosquitto`` package) for one benchmark run.

The harness writes a temporary ``mosquitto.conf`` (free loopback port, persistence on in
the run's temporary directory, unlimited per-client queue, anonymous access) and starts
``/usr/sbin/mosquitto -c`` on it; everything else is Mosquitto's default, notably
``max_inflight_messages 20`` and ``autosave_interval 1800``: with ``persistence true``
Mosquitto keeps messages in memory and writes its database every 30 minutes and at exit,
so during a run nothing reaches the disk (tetherd commits every state change to SQLite
with ``synchronous = full`` before acting on it). Observed like tetherd: RSS, CPU, log.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psutil

from .process import ServerProcess

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
START_TIMEOUT = 15.0


class MosquittoError(Exception):
    """Mosquitto is not installed, did not start, or exited; the message says what to do."""


def mosquitto_version() -> str | None:
    try:
        out = subprocess.run([MOSQUITTO, "-h"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"mosquitto version (\S+)", out.stdout + out.stderr)
    return m.group(1) if m else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Mosquitto(ServerProcess):
    """``with Mosquitto() as m:`` starts the broker on ``m.port``; leaving stops it and
    removes its files (``TETHER_BENCH_KEEP=1`` keeps them)."""

    def __init__(self, extra: dict[str, object] | None = None) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="mosquitto-bench-"))
        self.extra = dict(extra or {})
        self.port = 0
        self.host = "127.0.0.1"
        self.log_path = self.root / "mosquitto.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.ps: psutil.Process | None = None
        self.exit_code: int | None = None
        self.settings: dict[str, object] = {}

    def start(self) -> None:
        if not Path(MOSQUITTO).exists():
            raise MosquittoError("mosquitto is not installed: apt-get install -y mosquitto")
        for _ in range(5):  # the free port may be taken between probing and binding
            self.port = _free_port()
            self.settings = {
                "listener": f"{self.port} {self.host}",
                "allow_anonymous": "true",
                "persistence": "true",
                "persistence_location": f"{self.root / 'db'}/",
                "max_queued_messages": 0,  # no per-client limit (the default 1000 would drop messages)
                "user": "root" if os.geteuid() == 0 else None,  # else it drops to user mosquitto
                "log_dest": f"file {self.log_path}",
                **self.extra,
            }
            (self.root / "db").mkdir(exist_ok=True)
            conf = self.root / "mosquitto.conf"
            conf.write_text("".join(f"{k} {v}\n" for k, v in self.settings.items() if v is not None))
            self.log_path.unlink(missing_ok=True)
            with (self.root / "mosquitto.out").open("wb") as out:
                self.proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL)
            self.ps = psutil.Process(self.proc.pid)
            if self._wait_listening():
                return
            self.stop()  # never leave a failed attempt running
            self.proc, self.exit_code = None, None
        raise MosquittoError(f"mosquitto did not start:\n{self.log_tail()}")

    def _wait_listening(self) -> bool:
        assert self.proc is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False  # e.g. address in use: try another port
            if f"listen socket on port {self.port}" in self.log_text() and "running" in self.log_text():
                return True
            time.sleep(0.02)
        self.stop()
        return False

    def log_text(self) -> str:
        text = ""
        for path in (self.log_path, self.root / "mosquitto.out"):
            try:
                text += path.read_text(errors="replace")
            except FileNotFoundError:
                pass
        return text

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def log_levels(self) -> dict[str, int]:
        """Log lines that look like trouble (Mosquitto writes no levels in its lines)."""
        counts: dict[str, int] = {}
        for line in self.log_text().splitlines():
            low = line.lower()
            if "should not be run as root" in low:
                continue  # the harness runs it as the user it runs as (root on the bench machine)
            for word in ("error", "warning", "out of memory", "dropped", "exceeded"):
                if word in low:
                    counts[word] = counts.get(word, 0) + 1
        return counts

