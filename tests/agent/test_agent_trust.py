"""The agent does not trust its server without limit (issue 15, finding 11): a fake daemon
that pushes past the window it agreed, sends messages past the agent's frame limit, cancels
deliveries the agent never had without end, or is reached over plain ws:// elsewhere."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tether.agent import Agent, Identity, Journal
from tether.agent.cli import main
from tether.agent.client import AgentClient, ClientSettings, private_transport
from tether.agent.host import MAX_FRAME_BYTES
from tether.agent.journal import MAX_TOMBSTONES
from tether.protocol import Ack, Progress, Result, Task

if TYPE_CHECKING:
    from conftest import FakeDaemon, StartAgent


def waiting_agent() -> tuple[Agent, asyncio.Event]:
    agent = Agent("trust")
    release = asyncio.Event()

    @agent.command("block")
    async def block(args: dict[str, Any]) -> str:
        await release.wait()
        return "done"

    return agent, release


async def test_pushes_beyond_the_window_are_refused_and_not_journaled(
    daemon: FakeDaemon, start_agent: StartAgent, caplog: pytest.LogCaptureFixture
) -> None:
    daemon.window, daemon.features = 2, ("batch",)
    agent, release = waiting_agent()
    running = await start_agent(agent)
    session = await daemon.next_session()
    # Five tasks in one message to an agent that agreed to hold at most two unacknowledged.
    await session.send_batch(*(daemon.task(d, "block") for d in range(1, 6)))
    assert (await session.expect(Ack)).delivery_ids == [1, 2]
    assert [running.journal.state(d) for d in range(1, 6)] == ["running", "running", None, None, None]
    assert "event=push_refused" in caplog.text and "window=2" in caplog.text
    # Within the window again, a push is taken.
    await session.send(daemon.task(3, "block"))
    assert (await session.expect(Ack)).delivery_ids == [3]
    release.set()
    done = {(await session.expect(Result, skip=(Ack, Progress))).delivery_id for _ in range(3)}
    assert done == {1, 2, 3}


async def test_a_message_past_the_agents_frame_limit_ends_the_session(
    daemon: FakeDaemon, start_agent: StartAgent
) -> None:
    assert MAX_FRAME_BYTES == 4 * 1024 * 1024
    await start_agent()
    session = await daemon.next_session()
    await session.send(daemon.task(1, "echo", {"pad": "x" * (MAX_FRAME_BYTES + 1024)}))
    assert await session.wait_closed() == 1009
    # (tether-agent run --max-frame-bytes takes more)
    await start_agent(name="roomy", max_frame_bytes=8 * 1024 * 1024)
    roomy = await daemon.next_session()
    while roomy.hello.agent_id != "roomy":
        roomy = await daemon.next_session()
    await roomy.send(daemon.task(2, "echo", {"pad": "x" * (MAX_FRAME_BYTES + 1024)}))
    assert (await roomy.expect(Ack)).delivery_ids == [2]


def test_tombstones_of_unknown_cancels_are_bounded(tmp_path: Path) -> None:
    with Journal(tmp_path / "journal.sqlite") as journal:
        for delivery_id in range(1, MAX_TOMBSTONES * 2 + 1):
            journal.cancel(delivery_id)
        assert journal.counts()["cancelled"] <= MAX_TOMBSTONES + MAX_TOMBSTONES // 10
        # The newest cancels are kept: their delivery never runs if it is pushed later.
        newest = MAX_TOMBSTONES * 2
        assert journal.accept([_task(newest)]).new == []
        assert journal.accept([_task(1)]).new != []  # the oldest was forgotten


def _task(delivery_id: int) -> Task:
    return Task(delivery_id=delivery_id, task_id=delivery_id, command="echo")


@pytest.mark.parametrize(("url", "private"), [
    ("wss://tetherd.example:8765", True), ("ws://127.0.0.1:8765", True), ("ws://localhost:8765", True),
    ("ws://[::1]:8765", True), ("ws://tetherd.example:8765", False), ("ws://10.0.0.5:8765", False),
])
def test_plain_ws_is_private_only_on_this_host(url: str, private: bool) -> None:
    assert private_transport(url) is private


async def test_plain_ws_to_another_host_is_warned_about_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.WARNING)
    warned = asyncio.Event()

    class Watch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "event=insecure_transport" in record.getMessage():
                warned.set()

    watch = Watch()
    logging.getLogger().addHandler(watch)
    journal = Journal(tmp_path / "journal.sqlite")
    journal.set_identity(Identity(server="ws://192.0.2.1:9", agent_id="a1", token="t"))
    client = AgentClient(journal, settings=ClientSettings(backoff_base=0.01, backoff_cap=0.01, handshake_timeout=0.05))
    running = asyncio.create_task(client.run())
    try:
        async with asyncio.timeout(5):
            await warned.wait()
    finally:
        logging.getLogger().removeHandler(watch)
        client.stop()
        async with asyncio.timeout(5):
            await running
        journal.close()
    assert "server=ws://192.0.2.1:9" in caplog.text
    # ... and by the command line, when such a URL is given.
    state = tmp_path / "state"
    with Journal.in_state_dir(state) as enrolled:
        enrolled.set_identity(Identity(server="wss://tetherd.example:8765", agent_id="a9", token="t"))
    assert main(["set-server", "ws://tetherd.example:8765", "--state-dir", str(state)]) == 0
    assert "warning: ws://tetherd.example:8765 is plain ws:// to another host" in capsys.readouterr().err
    assert main(["set-server", "ws://127.0.0.1:8765", "--state-dir", str(state)]) == 0
    assert "warning" not in capsys.readouterr().err
