"""What every server process the benchmarks start shares: how it is measured and stopped.

tetherd, the raw-websockets baseline and Mosquitto each run in a temporary directory
(``root``); the harness reads their RSS and CPU with psutil, stops them with SIGTERM (then
SIGKILL if they do not stop in time) and removes the directory unless
``TETHER_BENCH_KEEP`` is set.
"""

from __future__ import annotations

import abc
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Self

import psutil

STOP_TIMEOUT = 60.0


class ServerProcess(abc.ABC):
    """Base of :class:`~bench.tetherd.Tetherd` and :class:`~bench.mosquitto.Mosquitto`."""

    root: Path
    proc: subprocess.Popen[bytes] | None
    ps: psutil.Process | None
    exit_code: int | None

    @abc.abstractmethod
    def start(self) -> None:
        """Start the process and wait until it listens."""

    def __enter__(self) -> Self:
        """Start the server (once: entering again returns the running one)."""
        if self.proc is not None:
            return self
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def rss(self) -> int:
        assert self.ps is not None
        return int(self.ps.memory_info().rss)

    def cpu_seconds(self) -> float:
        """User + system CPU time the process used so far (all its threads)."""
        assert self.ps is not None
        t = self.ps.cpu_times()
        return float(t.user + t.system)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> int | None:
        """SIGTERM (tetherd drains, Mosquitto saves its persistence file), wait; SIGKILL if
        it does not stop in time. Returns the exit code."""
        if self.proc is None or self.exit_code is not None:
            return self.exit_code
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=STOP_TIMEOUT)
        self.exit_code = self.proc.returncode
        return self.exit_code

    def close(self) -> None:
        try:
            self.stop()
        finally:
            if os.environ.get("TETHER_BENCH_KEEP"):
                print(f"kept {self.root}", file=sys.stderr)
            else:
                shutil.rmtree(self.root, ignore_errors=True)
