"""Runs journaled deliveries: highest priority first, then oldest; ``concurrency`` at once.

Ordering follows Armadito's jobs (priority urgent 3 .. low 0, run by priority); ties go to
the lowest delivery id, which the daemon hands out in creation order.

Every run of a delivery goes ``pending -> running -> finished`` in the journal *before*
anything is said to the daemon: ``progress`` after the claim, ``result`` after it is in
the outbox. Both name the run. A handler that returns a :class:`ScheduledCommand` ends its
run with a schedule result (``Result.schedule``, its partial result as ``output``); the
daemon then pushes the next run of the same delivery, which queues here like any other.
At most one run of a delivery runs at a time, so a running handler is known by its
delivery id alone (which is all a ``cancel`` names).

The runner keeps working while the session is down; frames it emits meanwhile are
dropped by the client (results wait in the outbox, progress is best effort).

Shutdown (:meth:`Runner.stop`) starts nothing new: idle workers exit at once, busy ones
get a grace period, then their handlers are cancelled and recorded as failed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from tether.protocol import MSGPACK, Progress, Result, Schedule, pack, unpack
from tether.protocol.frames import NIL

from .journal import Claimed, Journal
from .logfmt import EventLog
from .polling import ScheduledCommand
from .sdk import Command, Context

STOPPED_WHILE_RUNNING = "agent stopped while the command was running"
_STOP = (-(1 << 62), -1, 0)
"""Queue item that sorts before every run: a worker that takes it exits."""

_NOT_JSON = (TypeError, ValueError, OverflowError, RecursionError, msgspec.MsgspecError)


def encode_output(value: Any, what: str = "return value") -> tuple[msgspec.Raw | None, str]:
    """The handler's return value as the ``output`` of a result, or why it cannot be one.

    The value must be JSON-serialisable (consoles show it as JSON). It is normalised
    through JSON, so the daemon stores exactly what a console will see.
    """
    try:
        normalised = msgspec.json.decode(msgspec.json.encode(value))
        return msgspec.Raw(pack(normalised)), ""
    except _NOT_JSON as exc:
        return None, f"{what} is not JSON-serialisable ({type(value).__name__}): {exc}"


def encode_schedule(
    scheduled: ScheduledCommand, run_args: dict[str, Any]
) -> tuple[msgspec.Raw, Schedule] | str:
    """A :class:`ScheduledCommand` as the ``output`` and ``schedule`` of a schedule result,
    or why it cannot be one. ``run_args`` (this run's args as delivered) are the next
    run's when the command names none."""
    output, problem = encode_output(scheduled.partial_result, "partial_result")
    if output is None:
        return problem
    args = run_args if scheduled.args is None else scheduled.args
    try:
        normalised = msgspec.json.decode(msgspec.json.encode(args))
    except _NOT_JSON as exc:
        return f"ScheduledCommand args are not JSON-serialisable: {exc}"
    timeout = scheduled.timeout_in_seconds
    return output, Schedule(
        command=scheduled.command, next_run_in_seconds=float(scheduled.next_run_in_seconds),
        args=normalised, timeout_in_seconds=None if timeout is None else float(timeout),
        poll_message=scheduled.poll_message,
    )


class _Execution:
    """A delivery whose handler is running: what :meth:`Runner.cancel` needs to reach it."""

    __slots__ = ("ctx", "task")

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.task: asyncio.Task[Any] | None = None


class Runner:
    """A priority queue of runs of deliveries and the workers that run them."""

    def __init__(
        self,
        commands: Mapping[str, Command],
        journal: Journal,
        emit: Callable[[bytes], None],
        *,
        concurrency: int = 4,
        log: EventLog | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self._commands = commands
        self._journal = journal
        self._emit = emit
        self._concurrency = concurrency
        self.log = log or EventLog()
        """Where the runner reports; the client binds it to the agent id."""
        self._clock = clock
        self._queue: asyncio.PriorityQueue[tuple[int, int, int]] = asyncio.PriorityQueue()
        self._workers: list[asyncio.Task[None]] = []
        self._running: dict[int, _Execution] = {}
        self._stopping = False
        self._deadline = 0.0

    @property
    def running(self) -> int:
        """How many handlers are running now."""
        return len(self._running)

    def start(self) -> None:
        """Spawn the workers. Their owner is this runner: :meth:`stop` or :meth:`abort`."""
        if self._workers:
            raise RuntimeError("runner already started")
        loop = asyncio.get_running_loop()
        self._workers = [loop.create_task(self._work()) for _ in range(self._concurrency)]

    def submit(self, priority: int, delivery_id: int, run: int) -> None:
        """Queue a journaled (pending) run. Ignored once stopping: it stays pending in the
        journal and runs after the next start."""
        if not self._stopping:
            self._queue.put_nowait((-priority, delivery_id, run))

    def cancel(self, delivery_id: int) -> bool:
        """Interrupt the running handler of a delivery, whatever its run (the journal
        already says ``cancelled``).

        Async handlers get ``CancelledError``; sync ones only see ``ctx.cancelled`` set and
        keep their worker until they return. ``False`` if it was not running.
        """
        execution = self._running.get(delivery_id)
        if execution is None:
            return False
        execution.ctx.cancelled.set()
        if execution.task is not None:
            execution.task.cancel()
        return True

    async def stop(self, grace: float) -> None:
        """Start nothing new; wait up to ``grace`` seconds for running handlers, then cancel
        them (recorded as failed results). Idempotent; being cancelled while waiting leaves
        the workers running (call :meth:`abort`)."""
        loop = asyncio.get_running_loop()
        if not self._stopping:
            self._stopping = True
            self._deadline = loop.time() + grace
            for _ in self._workers:
                self._queue.put_nowait(_STOP)
        alive = {w for w in self._workers if not w.done()}
        if alive:
            _, alive = await asyncio.wait(alive, timeout=max(0.0, self._deadline - loop.time()))
        if alive:
            self.log.warning("shutdown_grace_expired", running=len(self._running), grace=grace)
            await self._cancel(alive)
        self._reap()

    async def abort(self) -> None:
        """Cancel every worker now (the agent is being torn down)."""
        self._stopping = True
        await self._cancel({w for w in self._workers if not w.done()})
        self._reap()

    async def _cancel(self, workers: set[asyncio.Task[None]]) -> None:
        for execution in self._running.values():
            execution.ctx.cancelled.set()
        for worker in workers:
            worker.cancel()
        if workers:
            await asyncio.wait(workers)

    def _reap(self) -> None:
        for worker in self._workers:
            if worker.done() and not worker.cancelled() and worker.exception() is not None:
                self.log.error("worker_crashed", error=repr(worker.exception()))

    async def _work(self) -> None:
        while True:
            _, delivery_id, run = await self._queue.get()
            if delivery_id == _STOP[1]:
                return
            try:
                await self._run(delivery_id, run)
            except Exception:
                # A journal failure (disk full, I/O error). The run stays ``running`` and
                # fails on restart; this worker carries on with the others.
                self.log.exception("delivery_crashed", delivery_id=delivery_id, run=run)

    async def _run(self, delivery_id: int, run: int) -> None:
        claimed = self._journal.claim(delivery_id, run)
        if claimed is None:
            return  # cancelled before it started, or already taken
        log = self.log.bind(delivery_id=delivery_id, run=run, command=claimed.command)
        command = self._commands.get(claimed.command)
        if command is None:
            served = ", ".join(sorted(self._commands))
            self._finish(claimed, log, ok=False, error=f"unknown command {claimed.command!r} (this agent serves: {served})")
            return
        try:
            args = unpack(claimed.args)
        except msgspec.DecodeError as exc:
            self._finish(claimed, log, ok=False, error=f"args are not valid MessagePack: {exc}")
            return
        if args is None:
            args = {}
        if not isinstance(args, dict):
            self._finish(claimed, log, ok=False, error=f"args must be a JSON object, got {type(args).__name__}")
            return

        ctx = Context(
            delivery_id=delivery_id, task_id=claimed.task_id, command=claimed.command,
            priority=claimed.priority, run=claimed.run,
            emit=self._emit_progress, loop=asyncio.get_running_loop(),
        )
        execution = _Execution(ctx)
        self._running[delivery_id] = execution
        self._emit(MSGPACK.encode(Progress(delivery_id=delivery_id, run=run)))
        log.info("command_started", task_id=claimed.task_id)
        try:
            output = await self._invoke(command, args, execution)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                # The agent is stopping and the grace period is over.
                ctx.cancelled.set()
                self._finish(claimed, log, ok=False, error=STOPPED_WHILE_RUNNING)
                raise
            if not ctx.cancelled.is_set():
                self._finish(claimed, log, ok=False, error="CancelledError: the command cancelled itself")
                return
            log.info("command_cancelled")
            return
        except Exception as exc:
            self._finish(claimed, log, ok=False, error=f"{type(exc).__name__}: {exc}")
            return
        finally:
            self._running.pop(delivery_id, None)
        if ctx.cancelled.is_set():
            log.info("command_cancelled", finished_anyway=True)
            return
        if isinstance(output, ScheduledCommand):
            scheduled = encode_schedule(output, unpack(claimed.args) or {})
            if isinstance(scheduled, str):
                self._finish(claimed, log, ok=False, error=scheduled)
            else:
                self._finish(claimed, log, ok=True, output=scheduled[0], schedule=scheduled[1])
            return
        encoded, problem = encode_output(output)
        if encoded is None:
            self._finish(claimed, log, ok=False, error=problem)
        else:
            self._finish(claimed, log, ok=True, output=encoded)

    async def _invoke(self, command: Command, args: dict[str, Any], execution: _Execution) -> Any:
        kwargs = {"ctx": execution.ctx} if command.takes_ctx else {}
        if command.is_async:
            execution.task = asyncio.ensure_future(command.function(args, **kwargs))
            return await execution.task
        return await asyncio.to_thread(command.function, args, **kwargs)

    def _emit_progress(self, frame: Progress) -> None:
        if frame.delivery_id in self._running:
            self._emit(MSGPACK.encode(frame))

    def _finish(
        self, claimed: Claimed, log: EventLog, *, ok: bool, output: msgspec.Raw = NIL, error: str = "",
        schedule: Schedule | None = None,
    ) -> None:
        """Put the result in the outbox (committed), then send it."""
        result = Result(
            delivery_id=claimed.delivery_id, run=claimed.run, ok=ok, output=output, error=error,
            started_at=claimed.started_at, finished_at=self._clock(), schedule=schedule,
        )
        blob = MSGPACK.encode(result)
        if not self._journal.finish(claimed.delivery_id, claimed.run, blob):
            log.info("result_dropped", reason="cancelled")
            return
        if schedule is not None:
            log.info("command_finished", ok=True, seconds=result.finished_at - result.started_at,
                     next_run_in=schedule.next_run_in_seconds, next_command=schedule.command)
        elif ok:
            log.info("command_finished", ok=True, seconds=result.finished_at - result.started_at)
        else:
            log.warning("command_finished", ok=False, error=error)
        self._emit(blob)
