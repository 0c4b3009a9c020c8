"""The agent applying its configuration (``AgentClient.configure``, ``@agent.on_config``):
its own settings and its handlers, or nothing of it when it is refused."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tether.agent import Agent, Journal
from tether.agent.client import AgentClient
from tether.agent.logfmt import LOGGER

if TYPE_CHECKING:
    from conftest import StartAgent


async def test_a_configuration_is_applied_and_its_handlers_see_every_key(tmp_path: Path) -> None:
    agent = Agent()
    seen: list[dict[str, Any]] = []

    @agent.on_config
    def plain(config: dict[str, Any]) -> None:
        seen.append(config)

    @agent.on_config
    async def coroutine(config: dict[str, Any]) -> None:
        seen.append({"async": config.get("app.mode")})

    with Journal(tmp_path / "j.sqlite") as journal:
        client = AgentClient(journal, agent)
        assert client.state_interval == 300.0 and client.config == {}
        assert await client.configure({"state_interval": "1m", "app.mode": "strict", "log_level": "info"})
        assert seen == [{"state_interval": 60.0, "log_level": "info", "app.mode": "strict"}, {"async": "strict"}]
        assert client.state_interval == 60.0
        assert client.config == {"app.mode": "strict", "state_interval": 60.0}  # the default log_level left out
        assert await client.configure({"log_level": "debug"})
        assert LOGGER.level == logging.DEBUG and client.state_interval == 300.0
    LOGGER.setLevel(logging.NOTSET)


async def test_a_refused_configuration_changes_nothing_and_says_why(tmp_path: Path) -> None:
    agent = Agent()

    @agent.on_config
    def picky(config: dict[str, Any]) -> None:
        if config.get("app.mode") == "bad":
            raise ValueError("mode bad is not supported")

    with Journal(tmp_path / "j.sqlite") as journal:
        client = AgentClient(journal, agent)
        assert await client.configure({"state_interval": 60})
        assert not await client.configure({"state_interval": 20, "app.mode": "bad"})
        assert client.config == {"state_interval": 60.0} and client.state_interval == 60.0
        assert client._config_error == "on_config handler failed: ValueError: mode bad is not supported"
        assert not await client.configure({"state_interval": 1})
        assert client._config_error.startswith("invalid configuration: state_interval must be a duration")
        assert await client.configure({})
        assert client.config == {} and client._config_error == "" and client.state_interval == 300.0


async def test_a_restarted_agent_runs_with_the_configuration_it_had(start_agent: StartAgent) -> None:
    """Kept in the journal: a restart is not a drift (tetherd would push it again, and a
    ``config-drift`` hook fire, at every restart of a configured agent)."""
    agent = Agent()
    seen: list[Any] = []

    @agent.on_config
    def keep(config: dict[str, Any]) -> None:
        seen.append(config.get("app.mode"))

    first = await start_agent(agent)
    assert await first.client.configure({"state_interval": 60, "app.mode": "strict"})
    assert first.journal.config() == {"state_interval": 60.0, "app.mode": "strict"}
    await first.stopped()
    again = await start_agent(agent)  # the same state: its journal
    async with asyncio.timeout(5):
        while again.client.sessions == 0:  # noqa: ASYNC110 -- restored before its first session opens
            await asyncio.sleep(0.01)
    assert again.client.config == {"state_interval": 60.0, "app.mode": "strict"}
    assert again.client.state_interval == 60.0 and seen == ["strict", "strict"]
