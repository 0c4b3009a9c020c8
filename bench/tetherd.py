"""A real ``tetherd serve`` process on a fresh data directory, for one benchmark run.

stdout (the credentials JSON) and stderr (the log) go to files in the run's temporary
directory, so a chatty daemon can never block on a full pipe; the URL is read from the
``event=listening url=...`` log line. ``/metrics`` is read over plain HTTP.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

from .process import ServerProcess

TETHERD = Path(sys.executable).parent / "tetherd"
TETHERD_ENV = "TETHER_BENCH_TETHERD"
"""Set to a command (split like a shell would) to benchmark another tetherd build or a
wrapper around it instead of the ``tetherd`` beside this Python; it gets the same args."""
START_TIMEOUT = 30.0
HTTP_TIMEOUT = 5.0

_LISTENING = re.compile(r"event=listening url=(ws://\S+)")


def _credential(text: str, label: str) -> str:
    """A value of the block a first ``tetherd serve`` prints (``  admin token:    tta_...``)."""
    m = re.search(rf"^\s*{label}:\s+(\S+)", text, re.M)
    if m is None:
        raise TetherdError(f"tetherd printed no {label}:\n{text}")
    return m.group(1)


_SAMPLE = re.compile(r'^(\w+)(?:\{([^}]*)\})? (\S+)$')


def connections_shed(metrics: dict[str, float]) -> float:
    """``tether_connections_shed_total``, summed over its reasons (a tetherd from before it
    had them writes the one unlabelled counter)."""
    return sum(v for k, v in metrics.items() if k.split("{", 1)[0] == "tether_connections_shed_total")


class TetherdError(Exception):
    """tetherd did not start, or stopped misbehaving; the message carries its log tail."""


class Tetherd(ServerProcess):
    """``with Tetherd() as d:`` starts tetherd; leaving stops it and removes its files.

    tetherd runs on its defaults; ``settings`` (e.g. ``{"window": 64}``), if any, are
    written to a temporary TOML file passed with ``--config``.
    """

    def __init__(self, settings: dict[str, object] | None = None) -> None:
        self.settings = dict(settings or {})
        self.root = Path(tempfile.mkdtemp(prefix="tether-bench-"))
        self.data_dir = self.root / "data"
        self.log_path = self.root / "tetherd.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.ps: psutil.Process | None = None
        self.url = ""
        self.http = ""
        self.admin_token = ""
        self.enroll_key = ""
        self.exit_code: int | None = None

    def command(self) -> list[str]:
        """The command line that starts the server (it must log ``event=listening url=ws://...``)."""
        command = shlex.split(os.environ.get(TETHERD_ENV, "")) or [str(TETHERD)]
        # Not --json: it makes the log JSON lines (and older tetherds print the same text block).
        args = [*command, "serve", "--data-dir", str(self.data_dir), "--listen", "127.0.0.1:0"]
        if self.settings:
            config = self.root / "tetherd.toml"
            config.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in self.settings.items()))
            args += ["--config", str(config)]
        return args

    def read_credentials(self, out_path: Path) -> None:
        text = out_path.read_text()
        self.admin_token = _credential(text, "admin token")
        self.enroll_key = _credential(text, "enrollment key")

    def start(self) -> None:
        args = self.command()
        out_path = self.root / "tetherd.out"
        with out_path.open("wb") as out, self.log_path.open("wb") as err:
            # The child inherits this process's (raised) RLIMIT_NOFILE.
            self.proc = subprocess.Popen(args, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        self.ps = psutil.Process(self.proc.pid)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            m = _LISTENING.search(self.log_text())
            if m:
                self.url = m.group(1)
                break
            if self.proc.poll() is not None:
                raise TetherdError(f"{args[0]} exited with {self.proc.returncode} before listening:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise TetherdError(f"tetherd not listening within {START_TIMEOUT:g} s:\n{self.log_tail()}")
            time.sleep(0.02)
        self.http = "http://" + self.url.removeprefix("ws://")
        self.read_credentials(out_path)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def log_levels(self) -> dict[str, int]:
        """How many log lines tetherd wrote at WARNING and above, by ``level event``."""
        counts: dict[str, int] = {}
        for line in self.log_text().splitlines():
            m = re.search(r"level=(WARNING|ERROR|CRITICAL) .*?event=(\S+)", line, re.IGNORECASE)
            if m:
                key = f"{m.group(1).lower()} {m.group(2)}"
                counts[key] = counts.get(key, 0) + 1
        return counts

    # -- observation ------------------------------------------------------------------------

    def metrics(self) -> dict[str, float]:
        """``GET /metrics`` as ``{'name{labels}': value}`` (labels as written by tetherd)."""
        with urllib.request.urlopen(self.http + "/metrics", timeout=HTTP_TIMEOUT) as response:
            text = response.read().decode()
        samples: dict[str, float] = {}
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            m = _SAMPLE.match(line)
            if m:
                name, labels, value = m.groups()
                samples[f"{name}{{{labels}}}" if labels else name] = float(value)
        return samples


class WsBaseline(Tetherd):
    """The raw-websockets baseline server (:mod:`bench.ws_baseline`) as a process, observed
    like tetherd: same ``/metrics`` counters, RSS, CPU. Nothing to enroll: any hello is
    welcomed and given ``per_session`` task frames."""

    def __init__(self, per_session: int, arg_bytes: int, window: int = 10) -> None:
        super().__init__()
        self.per_session, self.arg_bytes, self.window = per_session, arg_bytes, window

    def command(self) -> list[str]:
        return [sys.executable, str(Path(__file__).with_name("ws_baseline.py")), "--listen", "127.0.0.1:0",
                "--per-session", str(self.per_session), "--arg-bytes", str(self.arg_bytes),
                "--window", str(self.window)]

    def read_credentials(self, out_path: Path) -> None:
        pass
