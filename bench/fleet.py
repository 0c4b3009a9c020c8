"""The simulated fleet: real ``AgentClient``s, many per process, in a few worker processes.

Every simulated agent is the agent's own code: :class:`tether.agent.client.AgentClient`
with an in-memory :class:`~tether.agent.journal.Journal`, serving the built-in commands
(``echo``), on uvloop as ``tether-agent run`` does. Workers are started with the
``spawn`` context, build their clients, then wait on one barrier with the parent so every
agent of every process starts connecting at the same moment.

What a worker measures comes from the client's own log events, caught by
:class:`AgentProbe` (an :class:`~tether.agent.logfmt.EventLog` passed as ``log=``), so the
client code is not wrapped or patched:

* ``session_open``   -- logged once ``welcome`` is received: the session is open;
* ``tasks_received`` -- logged after a burst of ``task`` frames was read, journaled and
  acknowledged: the first one is "first task received";
* ``command_started`` / ``command_finished`` -- a delivery was claimed and started, and
  its result was put in the outbox and sent;
* ``results_committed`` (debug) -- tetherd's ``committed`` frame arrived: those results
  are in its database. The last one is when the agent's work was done, the counterpart of
  paho's last PUBACK in the MQTT scenarios.

Times are ``time.monotonic()`` (CLOCK_MONOTONIC, the same clock in every process).

Before the barrier, each worker makes its process what an agent that has been running for
a while is: every journal has run one delivery through the real calls (:func:`warm`), so
its SQL statements are prepared, and a process of many agents tunes its garbage collector
as tetherd does (so the GC does not scan thousands of clients' objects that no real agent
process holds). A fresh journal's first task costs about 220 µs more than its second
(SQLite compiling each statement once per connection). On an endpoint that is once in
the agent's life, on its own CPU; here it would be 5,000 times per worker on the two
cores tetherd runs on, in the very phase being measured.

With a :class:`~bench.churn.Churn` (the soak), every agent of a worker connects through
that worker's relay (:mod:`bench.churn`), which cuts seeded agents' connections abruptly
between :meth:`Fleet.start_churn` and :meth:`Fleet.stop_churn`.
"""

from __future__ import annotations

import asyncio
import collections
import importlib
import logging
import multiprocessing
import queue
import resource
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from tether.agent import Agent
from tether.agent.client import AgentClient, ClientSettings, FatalSessionError
from tether.agent.journal import Identity, Journal
from tether.agent.logfmt import LOGGER, EventLog
from tether.daemon.housekeeping import tune as tune_gc
from tether.protocol import MSGPACK, Task

from .churn import Churn, Relay

BARRIER_TIMEOUT = 120.0
"""Seconds for every worker to build its clients and reach the start line."""
STOP_TIMEOUT = 60.0
"""Seconds for the clients of one worker to close their sessions once asked to stop."""
RESULT_TIMEOUT = 120.0


class FleetError(Exception):
    """A worker process failed to start, or returned no results."""


class AgentProbe(EventLog):
    """One simulated agent's log: records the events the benchmark times, formats nothing.

    Warnings and errors are only counted (per event name, shared by a worker's agents), so
    a thousand agents never flood the terminal; the counts are part of the results.
    """

    __slots__ = ("committed", "committed_at", "duplicates", "executed", "failed", "first_exec", "first_task", "opened",
                 "problems")

    def __init__(self, problems: collections.Counter[str]) -> None:
        super().__init__(LOGGER)
        self.opened: list[float] = []
        self.first_task: float | None = None
        self.first_exec: float | None = None
        self.executed = 0
        self.failed = 0
        self.duplicates = 0
        self.committed = 0
        self.committed_at: float | None = None
        self.problems = problems

    def bind(self, **context: object) -> EventLog:
        return self  # the probe is per agent already; nothing is formatted

    def debug(self, event: str, **fields: object) -> None:
        if event == "results_committed":  # tetherd's ``committed``: these results are in its database
            count = fields.get("count")
            if isinstance(count, int):
                self.committed += count
            self.committed_at = time.monotonic()

    def info(self, event: str, **fields: object) -> None:
        if event == "command_finished":
            self.executed += 1
        elif event == "command_started":
            if self.first_exec is None:
                self.first_exec = time.monotonic()
        elif event == "tasks_received":
            if self.first_task is None and fields.get("new"):
                self.first_task = time.monotonic()
            duplicates = fields.get("duplicate")
            if isinstance(duplicates, int):
                self.duplicates += duplicates
        elif event == "session_open":
            self.opened.append(time.monotonic())

    def warning(self, event: str, **fields: object) -> None:
        if event == "command_finished":
            self.executed += 1
            self.failed += 1
        self.problems[event] += 1

    def error(self, event: str, **fields: object) -> None:
        self.problems[event] += 1

    def exception(self, event: str, **fields: object) -> None:
        self.problems[event] += 1


IdentityTuple = tuple[str, str, str, str, tuple[str, ...]]

WARM_DELIVERY = 0
"""A delivery id tetherd never hands out (its ids start at 1)."""


def warm(journal: Journal) -> None:
    """Run one delivery through every journal call a session makes (start-up, hello,
    accept, the runner's step, confirm), so the statements are prepared. It ends
    finished and confirmed: never in ``hello.holding``, never in the outbox."""
    journal.identity()
    journal.recover()
    journal.pending()
    journal.holding()
    journal.outbox()
    args = msgspec.Raw(MSGPACK.encode_value({}))
    journal.accept([Task(delivery_id=WARM_DELIVERY, task_id=0, command="echo", args=args)])
    with journal.transaction():
        journal.finish_many([])
        journal.claim_many([(WARM_DELIVERY, 1)])
    with journal.transaction():
        journal.finish_many([(WARM_DELIVERY, 1, MSGPACK.encode_value(None))])
    journal.confirm([(WARM_DELIVERY, 1)])


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _load_commands(spec: str | None) -> Agent | None:
    """``module:attr`` naming an :class:`Agent` whose commands the simulated agents serve too."""
    if spec is None:
        return None
    module, _, attr = spec.partition(":")
    agent = getattr(importlib.import_module(module), attr)
    assert isinstance(agent, Agent), f"{spec} is not an Agent"
    return agent


async def _run_agents(identities: Sequence[IdentityTuple], barrier: Any, stop: Any,
                      max_seconds: float, commands: str | None = None,
                      churn: tuple[Churn, int, Any, Any] | None = None, concurrency: int = 4) -> dict[str, Any]:
    problems: collections.Counter[str] = collections.Counter()
    probes: list[AgentProbe] = []
    clients: list[AgentClient] = []
    agent = _load_commands(commands)
    relay: Relay | None = None
    servers = [ident[0] for ident in identities]
    if churn is not None and identities:
        relay = Relay(identities[0][0])
        servers = await relay.listen(len(identities))
    for server, (_, agent_id, token, machine_uuid, tags) in zip(servers, identities, strict=True):
        journal = Journal(":memory:")
        journal.set_identity(Identity(server, agent_id, token, machine_uuid, tags))
        warm(journal)
        probe = AgentProbe(problems)
        probes.append(probe)
        clients.append(AgentClient(journal, agent, ClientSettings(hostname=f"sim-{machine_uuid}", platform="bench",
                                                                   concurrency=concurrency), log=probe))
    fatal: list[str] = []
    if len(clients) > 1:
        # As tetherd does: thousands of clients in one process must not be scanned by the GC
        # (a real agent process holds one client; the drain's worker is left like it).
        tune_gc()

    async def run(client: AgentClient) -> None:
        try:
            await client.run()
        except FatalSessionError as exc:
            fatal.append(str(exc))

    try:
        await asyncio.to_thread(barrier.wait, BARRIER_TIMEOUT)
    except threading.BrokenBarrierError:
        return {"aborted": True}
    go = time.monotonic()
    cpu_go = _cpu_seconds()
    tasks = [asyncio.create_task(run(c)) for c in clients]
    cutter = None
    if relay is not None and churn is not None:
        spec, index, churn_go, churn_stop = churn
        cutter = asyncio.create_task(relay.churn(spec, index, len(clients), churn_go, churn_stop, max_seconds))
    stopped = await asyncio.to_thread(stop.wait, max_seconds)  # the parent stops us; this bounds it
    cpu_stop = _cpu_seconds()
    stopped_at = time.monotonic()
    if cutter is not None:
        cutter.cancel()
        await asyncio.wait([cutter])
    for client in clients:
        client.stop()
    _, pending = await asyncio.wait(tasks, timeout=STOP_TIMEOUT)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=STOP_TIMEOUT)
    if relay is not None:
        await relay.close()
    crashed = [repr(t.exception()) for t in tasks if t.done() and not t.cancelled() and t.exception() is not None]
    return {
        "go": go,
        "stopped_at": stopped_at,
        "stop_requested": bool(stopped),
        "cpu_seconds": cpu_stop - cpu_go,
        "opened": [p.opened for p in probes],
        "first_task": [p.first_task for p in probes],
        "first_exec": [p.first_exec for p in probes],
        "executed": sum(p.executed for p in probes),
        "committed": [p.committed for p in probes],
        "committed_at": [p.committed_at for p in probes],
        "failed": sum(p.failed for p in probes),
        "duplicates": sum(p.duplicates for p in probes),
        "problems": dict(problems),
        "fatal": fatal,
        "crashed": crashed,
        "not_stopped": len(pending),
        "sessions": [c.sessions for c in clients],
        **(relay.figures() if relay is not None else {}),
    }


def _worker(index: int, identities: list[IdentityTuple], barrier: Any, stop: Any, out: Any,
            max_seconds: float, commands: str | None = None,
            churn: tuple[Churn, int, Any, Any] | None = None, concurrency: int = 4) -> None:
    logging.basicConfig(level=logging.WARNING, format=f"bench-worker-{index} %(levelname)s %(message)s")
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(_run_agents(identities, barrier, stop, max_seconds, commands, churn, concurrency))
    else:
        result = uvloop.run(_run_agents(identities, barrier, stop, max_seconds, commands, churn, concurrency))
    out.put((index, result))


@dataclass
class Fleet:
    """``procs`` worker processes sharing ``identities`` round-robin.

    ``start()`` spawns them, ``go()`` releases them all at once (returns the monotonic
    start time), ``finish()`` stops every client and returns each worker's results.
    Every wait is bounded; a worker that does not finish is terminated, then killed.
    """

    identities: Sequence[Identity]
    procs: int
    max_seconds: float
    """A worker whose clients run this long stops them by itself (the parent normally
    stops them much earlier)."""
    commands: str | None = None
    """``module:attr`` of an :class:`~tether.agent.Agent` served besides the built-ins."""
    churn: Churn | None = None
    """Connect through relays that cut seeded agents' connections (:mod:`bench.churn`),
    between :meth:`start_churn` and :meth:`stop_churn`."""
    concurrency: int = 4
    """Each client's ``concurrency`` (``tether-agent --concurrency``; 4 is the agent's default)."""
    _ctx: Any = field(init=False, repr=False)
    _workers: list[Any] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        self.procs = max(1, min(self.procs, len(self.identities) or 1))
        self._ctx = multiprocessing.get_context("spawn")
        self._barrier = self._ctx.Barrier(self.procs + 1)
        self._stop = self._ctx.Event()
        self._out = self._ctx.Queue()
        self._churn_go = self._ctx.Event()
        self._churn_stop = self._ctx.Event()

    def start(self) -> None:
        chunks: list[list[IdentityTuple]] = [[] for _ in range(self.procs)]
        for i, ident in enumerate(self.identities):
            chunks[i % self.procs].append(
                (ident.server, ident.agent_id, ident.token, ident.machine_uuid, tuple(ident.tags)))
        for index, chunk in enumerate(chunks):
            churn = None if self.churn is None else (self.churn, index, self._churn_go, self._churn_stop)
            proc = self._ctx.Process(target=_worker, args=(index, chunk, self._barrier, self._stop, self._out,
                                                           self.max_seconds, self.commands, churn,
                                                           self.concurrency),
                                     name=f"bench-fleet-{index}", daemon=True)
            proc.start()
            self._workers.append(proc)

    @property
    def pids(self) -> list[int]:
        return [w.pid for w in self._workers]

    def go(self) -> float:
        try:
            self._barrier.wait(BARRIER_TIMEOUT)
        except threading.BrokenBarrierError:
            raise FleetError(f"not every fleet worker reached the start line within {BARRIER_TIMEOUT:g} s "
                             "(see its traceback above)") from None
        return time.monotonic()

    def start_churn(self) -> None:
        """The workers' relays start cutting (no-op without :attr:`churn`)."""
        self._churn_go.set()

    def stop_churn(self) -> None:
        """The relays cut no more (their next check, within 0.25 s)."""
        self._churn_stop.set()

    def alive(self) -> bool:
        return all(w.is_alive() for w in self._workers)

    def finish(self) -> list[dict[str, Any]]:
        self._stop.set()
        results: dict[int, dict[str, Any]] = {}
        deadline = time.monotonic() + RESULT_TIMEOUT
        try:
            while len(results) < len(self._workers):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not (any(w.is_alive() for w in self._workers) or not self._out.empty()):
                    break
                try:
                    index, result = self._out.get(timeout=min(remaining, 1.0))
                except queue.Empty:  # look at the workers again
                    continue
                results[index] = result
        finally:
            self.close()
        missing = [i for i in range(len(self._workers)) if i not in results]
        if missing:
            raise FleetError(f"fleet workers {missing} returned no results (crashed or hung)")
        return [results[i] for i in range(len(self._workers))]

    def close(self) -> None:
        """Make sure every worker is gone (idempotent)."""
        self._stop.set()
        self._churn_stop.set()
        self._barrier.abort()  # a worker still at the start line gives up
        for w in self._workers:
            w.join(timeout=STOP_TIMEOUT)
            if w.is_alive():
                w.terminate()
                w.join(timeout=10)
            if w.is_alive():
                w.kill()
                w.join(timeout=10)


__all__ = ["AgentProbe", "Fleet", "FleetError"]
