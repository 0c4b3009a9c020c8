"""Fixtures for the end-to-end tests; the harness itself is in ``harness.py``."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from harness import AgentProc, Tetherd


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    e = dict(os.environ)
    e.pop("TETHER_URL", None)
    e.pop("TETHER_TOKEN", None)
    e["PYTHONUNBUFFERED"] = "1"
    return e


@pytest.fixture
def tetherd(tmp_path: Path, env: dict[str, str]) -> Iterator[Tetherd]:
    daemon = Tetherd(tmp_path / "data", env)
    daemon.start()
    yield daemon
    if daemon.proc is not None and daemon.proc.poll() is None:
        daemon.kill(signal.SIGKILL)


@pytest.fixture
def make_agent(tmp_path: Path, tetherd: Tetherd, env: dict[str, str]) -> Iterator[Callable[..., AgentProc]]:
    agents: list[AgentProc] = []

    def make(name: str, *tags: str, start: bool = False) -> AgentProc:
        agent = AgentProc(name, tmp_path, tetherd, env)
        agent.enroll(*tags)
        agents.append(agent)
        if start:
            agent.start()
        return agent

    yield make
    for agent in agents:
        if agent.proc is not None and agent.proc.poll() is None:
            agent.kill(signal.SIGKILL)
