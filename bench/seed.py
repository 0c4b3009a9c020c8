"""Setting up a run: enroll the simulated agents and queue their tasks, fast.

Enrollment uses the agent's own code (:func:`tether.agent.enrollment.enroll`), one machine
UUID per agent, a bounded number at once. Tasks are created through the console protocol,
many ``task.create`` calls in flight at once on a few sessions.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from typing import Any

from tether.agent.enrollment import enroll
from tether.agent.journal import Identity
from tether.console import ConsoleClient

ENROLL_IN_FLIGHT = 50
REQUESTS_IN_FLIGHT = 200
CONSOLE_SESSIONS = 2
SETUP_TIMEOUT = 300.0
"""Seconds the whole setup (enrollment or queueing) may take before the run is abandoned."""


async def enroll_fleet(url: str, key: str, agents: int, *, run_id: str, tags: Sequence[str] = ()) -> list[Identity]:
    """Enroll ``agents`` simulated agents (carrying ``tags``); their identities, in order."""
    gate = asyncio.Semaphore(ENROLL_IN_FLIGHT)

    async def one(i: int) -> Identity:
        async with gate:
            return await enroll(url, key, machine_uuid=f"bench-{run_id}-{i:06d}", hostname=f"sim-{i:06d}",
                                platform="bench", tags=tags)

    async with asyncio.timeout(SETUP_TIMEOUT):
        return list(await asyncio.gather(*(one(i) for i in range(agents))))


async def tagged_key(url: str, token: str, tags: Sequence[str]) -> str:
    """A new enrollment key whose agents get ``tags``."""
    async with ConsoleClient(url, token) as console:
        made = await console.call("key.create", {"tags": list(tags)})
    return str(made["key"])


async def queue_tasks(url: str, token: str, params: Sequence[dict[str, Any]]) -> list[Any]:
    """``task.create`` every params dict, spread over a few console sessions with up to
    ``REQUESTS_IN_FLIGHT`` concurrent calls each; the results in the same order. The first
    refused request raises :class:`~tether.protocol.errors.RequestRefused` (a benchmark's setup must not half-succeed)."""
    chunks = [list(itertools.islice(params, i, None, CONSOLE_SESSIONS)) for i in range(CONSOLE_SESSIONS)]

    async def session(chunk: list[dict[str, Any]]) -> list[Any]:
        gate = asyncio.Semaphore(REQUESTS_IN_FLIGHT)
        async with ConsoleClient(url, token) as console:

            async def one(p: dict[str, Any]) -> Any:
                async with gate:
                    return await console.call("task.create", p)

            return list(await asyncio.gather(*(one(p) for p in chunk)))

    async with asyncio.timeout(SETUP_TIMEOUT):
        results = await asyncio.gather(*(session(c) for c in chunks if c))
    # chunk i holds params i, i + n, i + 2n ...: interleave back into the original order
    ordered: list[Any] = [None] * len(params)
    for i, chunk_results in enumerate(results):
        ordered[i::CONSOLE_SESSIONS] = chunk_results
    return ordered


def echo_tasks(identities: Sequence[Identity], per_agent: int, arg_bytes: int) -> list[dict[str, Any]]:
    """``per_agent`` echo tasks per agent, agent by agent, each with ~``arg_bytes`` of args."""
    pad = "x" * max(0, arg_bytes - 30)
    return [
        {"command": "echo", "agent": ident.agent_id, "args": {"n": n, "pad": pad} if pad else {"n": n}}
        for ident in identities
        for n in range(per_agent)
    ]
