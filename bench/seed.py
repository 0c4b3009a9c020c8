"""Setting up a run: enroll the simulated agents and queue their tasks, fast.

Enrollment uses the agent's own code (:func:`tether.agent.enrollment.enroll`), one machine
UUID per agent, a bounded number at once. Tasks are created through the console protocol;
:class:`PipelinedConsole` keeps many ``task.create`` requests in flight on one session
(``ConsoleClient.call`` sends one request and reads frames until *its* answer, dropping
the others, so it cannot be called concurrently on one session).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from typing import Any

from tether.agent.enrollment import enroll
from tether.agent.journal import Identity
from tether.daemon.console import ConsoleClient, RequestError, SessionClosed
from tether.protocol.frames import Error, Request, Response

ENROLL_IN_FLIGHT = 50
REQUESTS_IN_FLIGHT = 200
CONSOLE_SESSIONS = 2
SETUP_TIMEOUT = 300.0
"""Seconds the whole setup (enrollment or queueing) may take before the run is abandoned."""


async def enroll_fleet(url: str, key: str, agents: int, *, run_id: str) -> list[Identity]:
    """Enroll ``agents`` simulated agents; their identities, in order."""
    gate = asyncio.Semaphore(ENROLL_IN_FLIGHT)

    async def one(i: int) -> Identity:
        async with gate:
            return await enroll(url, key, machine_uuid=f"bench-{run_id}-{i:06d}", hostname=f"sim-{i:06d}",
                                platform="bench")

    async with asyncio.timeout(SETUP_TIMEOUT):
        return list(await asyncio.gather(*(one(i) for i in range(agents))))


class PipelinedConsole(ConsoleClient):
    """A console session that keeps up to ``in_flight`` requests outstanding."""

    async def call_many(self, method: str, params: Sequence[dict[str, Any]], *,
                        in_flight: int = REQUESTS_IN_FLIGHT) -> list[Any]:
        """Send ``method`` once per params dict; the results in the same order.

        The first refused request raises :class:`RequestError` (a benchmark's setup must
        not half-succeed)."""
        waiting: dict[int, asyncio.Future[Any]] = {}
        gate = asyncio.Semaphore(in_flight)
        loop = asyncio.get_running_loop()

        async def read() -> None:
            while waiting or not sent_all.is_set():
                frame = await self._recv()
                if isinstance(frame, Error) and frame.code >= 4000:
                    raise SessionClosed(frame.code, frame.name, frame.message)
                rid = frame.id if isinstance(frame, Response) else frame.ref if isinstance(frame, Error) else None
                fut = waiting.pop(rid, None) if rid is not None else None
                if fut is None:
                    continue
                gate.release()
                if isinstance(frame, Response):
                    fut.set_result(frame.result)
                else:
                    assert isinstance(frame, Error)
                    fut.set_exception(RequestError(frame.code, frame.name, frame.message))

        sent_all = asyncio.Event()
        futures: list[asyncio.Future[Any]] = []
        async with asyncio.TaskGroup() as tg:
            reader = tg.create_task(read())
            for p in params:
                await gate.acquire()
                if reader.done():
                    break
                self._last_id += 1
                fut = loop.create_future()
                waiting[self._last_id] = fut
                futures.append(fut)
                await self._send(Request(id=self._last_id, method=method, params=p))
            sent_all.set()
            if not waiting:
                reader.cancel()
        return [f.result() for f in futures]


async def queue_tasks(url: str, token: str, params: Sequence[dict[str, Any]]) -> list[Any]:
    """``task.create`` every params dict, spread over a few pipelined console sessions."""
    chunks = [list(itertools.islice(params, i, None, CONSOLE_SESSIONS)) for i in range(CONSOLE_SESSIONS)]

    async def session(chunk: list[dict[str, Any]]) -> list[Any]:
        console = PipelinedConsole(url, token)
        async with console:  # __aenter__ is typed as returning a plain ConsoleClient
            return await console.call_many("task.create", chunk)

    async with asyncio.timeout(SETUP_TIMEOUT):
        results = await asyncio.gather(*(session(c) for c in chunks if c))
    return [r for chunk in results for r in chunk]


def echo_tasks(identities: Sequence[Identity], per_agent: int, arg_bytes: int) -> list[dict[str, Any]]:
    """``per_agent`` echo tasks per agent, agent by agent, each with ~``arg_bytes`` of args."""
    pad = "x" * max(0, arg_bytes - 30)
    return [
        {"command": "echo", "agent": ident.agent_id, "args": {"n": n, "pad": pad} if pad else {"n": n}}
        for ident in identities
        for n in range(per_agent)
    ]
