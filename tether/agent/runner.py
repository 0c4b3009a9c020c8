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

The journal step: the journal writes that are ready in the same turn of the event loop
share one transaction (one ``BEGIN IMMEDIATE`` / ``COMMIT``): the client's, in the order
its frames came (:meth:`Runner.write`: a burst of ``task`` frames to journal; a ``cancel``,
:meth:`Runner.cancel`; a ``committed``, :meth:`Runner.apply`), the finishes of the handlers
that returned, and then the claims for the free slots, which may take runs journaled by
that same transaction (a task pushed to an agent with a free slot is journaled and claimed
in one commit, without reading back what it has just written). The step runs once the
client has read every frame already received, and claims after every write: a task
cancelled by a frame read with it never starts, whatever came between them. A slot is free as
soon as its handler has returned, so with quick handlers each step finishes the runs that
just returned and claims as many next ones: one transaction per ``concurrency`` runs.
Each frame still goes out only after the transaction that makes it true is committed (an
``ack`` after the tasks are journaled, a result after it is in the outbox, a start after
the claim), so the promises of :mod:`.journal` hold at every instant. A handler that
returned but whose finish is not committed yet is, to a SIGKILL, a handler still running:
it becomes a failed result on restart, never a rerun. If a shared transaction fails, its
writes, finishes and claims are retried one transaction each, so a journal error still
costs only what it is about.

What the runner has to say goes into its :class:`~tether.agent.outflow.Outflow`
(:attr:`Runner.outflow`): each frame once the transaction that makes it true is committed,
an ``ack`` urgent while runs wait for a slot; and whether more frames are due (:attr:`Runner.due`),
so that the client's writer may let them gather into one message. The runner keeps working
while the session is down; the outflow drops what it is given meanwhile (results wait in the
outbox, progress is best effort).

Shutdown (:meth:`Runner.stop`) starts nothing new: queued runs stay pending in the
journal, running handlers get a grace period, then they are cancelled and recorded as
failed.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from tether.protocol import MSGPACK, Progress, Result, Schedule, unpack
from tether.protocol.agent_state import MAX_TEXT, LastTask
from tether.protocol.alerts import AlertBody
from tether.protocol.frames import NIL, Alert, Sequel
from tether.protocol.lifecycle import UNTASKED, RunState

from .journal import Claimed, Fresh, Journal
from .logfmt import EventLog
from .outcome import interpret
from .outflow import Outflow
from .sdk import CURRENT_RUN, Command, Context, ErrorResult

STOPPED_WHILE_RUNNING = "agent stopped while the command was running"

def encode_output(value: Any, what: str = "return value") -> tuple[msgspec.Raw | None, str]:
    """The handler's return value as the ``output`` of a result, or why it cannot be one
    (see :func:`tether.agent.outcome.interpret`, which reads every kind of return value)."""
    outcome = interpret(value, {})
    return (outcome.output, "") if outcome.ok else (None, outcome.error.replace("return value", what, 1))


@dataclass(frozen=True, slots=True)
class Intake:
    """What a journal write of :meth:`Runner.write` did, returned from inside the step's
    transaction."""

    new: list[tuple[int, int, int]] = field(default_factory=list)
    """``(priority, delivery_id, run)`` journaled ``pending`` by the write: to run."""
    fresh: Fresh = field(default_factory=dict)
    """What the journal holds of each new run, so that a claim in the same transaction
    need not read it back."""
    then: Callable[[], None] | None = None
    """Called once the transaction is committed (after its frames are put)."""
    acks: Sequence[bytes] = ()
    """Frames that acknowledge the write, sent once it is committed: urgent while runs wait
    for a slot (they free the daemon's window for more)."""
    resend: Sequence[bytes] = ()
    """Results to send again once committed, after the acks."""
    withdrawn: int | None = None
    """A delivery the write cancelled: none of its runs is claimed by this step, even one
    journaled earlier in the same transaction."""


JournalWrite = Callable[[], Intake]
"""Journal writes to run inside the next step's transaction. It may run twice (again in a
transaction of its own if the shared one failed), so it has no effect outside the journal:
those go in :attr:`Intake.then`."""

NOTHING = Intake()
"""A write with nothing to send nor do once committed."""


class _Execution:
    """A claimed run whose handler is running: what :meth:`Runner.cancel` needs to reach it."""

    __slots__ = ("cancellable", "claimed", "ctx", "task")

    def __init__(self, claimed: Claimed, ctx: Context, cancellable: bool) -> None:
        self.claimed = claimed
        self.ctx = ctx
        self.cancellable = cancellable
        """An async handler: a cancel interrupts it. A sync one only sees ``ctx.cancelled``."""
        self.task: asyncio.Task[None] | None = None


class _Ended:
    """How a run ended, waiting for its finish to be committed (the next journal step)."""

    __slots__ = ("blob", "claimed", "result")

    def __init__(self, claimed: Claimed, result: Result) -> None:
        self.claimed = claimed
        self.result = result
        self.blob = MSGPACK.encode(result)


def _withdrawn(intakes: list[Intake]) -> set[int]:
    """The deliveries cancelled by the writes of one step."""
    return {i.withdrawn for i in intakes if i.withdrawn is not None}


def _fresh(intakes: list[Intake], withdrawn: set[int]) -> Fresh:
    if len(intakes) == 1 and not withdrawn:
        return intakes[0].fresh
    fresh: Fresh = {}
    for intake in intakes:
        fresh.update(intake.fresh)
    return {ref: row for ref, row in fresh.items() if ref[0] not in withdrawn} if withdrawn else fresh


class Runner:
    """A priority queue of runs of deliveries and the tasks that run them."""

    def __init__(
        self,
        commands: Mapping[str, Command],
        journal: Journal,
        *,
        concurrency: int = 4,
        log: EventLog | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self._commands = commands
        self._journal = journal
        self.outflow = Outflow(self._has_due)
        """Where the runner's frames go, and what tells the client's writer to hold them."""
        self._concurrency = concurrency
        self.log = log or EventLog()
        """Where the runner reports; the client binds it to the agent id."""
        self._clock = clock
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: list[tuple[int, int, int]] = []
        """A heap of ``(-priority, delivery_id, run)``: journaled pending runs not yet claimed."""
        self._tasks: set[asyncio.Task[None]] = set()
        """One per claimed run until its handler returns; owned (awaited) by :meth:`stop`."""
        self._running: dict[int, _Execution] = {}
        """Claimed runs whose handler has not returned, by delivery id: the busy slots."""
        self._ended: list[_Ended] = []
        """Runs whose handler returned: their finish goes into the next journal step."""
        self._writes: list[JournalWrite] = []
        """The client's journal writes for the next step (:meth:`write`)."""
        self._starts: dict[int, _Execution] = {}
        """Runs started in the last journal step whose start report is not sent yet: see
        :meth:`_send_starts`."""
        self._beginning = 0
        """Runs claimed by the step under way, not yet begun (:attr:`due` counts them)."""
        self._step_scheduled = False
        self._stopping = False
        self._expired = False
        """The grace period is over: a cancelled handler is recorded as stopped."""
        self._deadline = 0.0
        self.alerts_sent = 0
        """The highest alert id put into the outflow in this session (the client resets it):
        a journal read for alerts raised by another process starts above it."""
        self.finished: Callable[[Claimed, Result], None] | None = None
        """Told of every run whose result is committed to the journal (``tether-agent once``
        reports them when it exits)."""
        self.stepped: Callable[[], None] | None = None
        """Called after every journal step that did something (``once`` looks then whether
        everything is done)."""
        self.tasks_run = 0
        """Runs whose finish was committed since the runner started (state reports)."""
        self.last_task: LastTask | None = None
        """The last of them: its command, when it ended, whether it succeeded (state reports)."""
        self.sequences: dict[int, tuple[float, float]] = {}
        """``delivery_id -> (started_at, deadline)`` of later polling runs pushed to this agent
        (:meth:`poll_sequence`; in memory only)."""

    @property
    def running(self) -> int:
        """How many handlers are running now."""
        return len(self._running)

    @property
    def backlog(self) -> int:
        """Runs waiting for a slot (0 once stopping): while there are some, results follow
        one another within moments."""
        return 0 if self._stopping else len(self._queue)

    @property
    def due(self) -> bool:
        """Frames about runs will follow within a turn or two of the event loop: runs wait
        for a slot, or were just claimed and have not taken their first step (a quick
        handler then returns), or returned and wait for the next journal step to commit
        and send their result. A run that is still running after its first step is not
        counted: its start report is sent then, and its result may take hours. (What the
        outflow asks, to know whether to hold what waits.)"""
        return self._has_due()

    @property
    def busy(self) -> bool:
        """Runs are queued, running or ending, or journal writes wait for the next step."""
        return bool(self._queue or self._running or self._ended or self._writes or self._beginning)

    def _has_due(self) -> bool:
        return bool(self.backlog or self._starts or self._ended or self._beginning)

    def start(self) -> None:
        """Start taking runs from the queue. The tasks it creates are owned by this runner
        and awaited by :meth:`stop` or :meth:`abort`."""
        if self._loop is not None:
            raise RuntimeError("runner already started")
        self._loop = asyncio.get_running_loop()
        if self._queue:
            self._schedule_step()

    def submit(self, priority: int, delivery_id: int, run: int) -> None:
        """Queue a journaled (pending) run. Ignored once stopping: it stays pending in the
        journal and runs after the next start."""
        if self._stopping:
            return
        heapq.heappush(self._queue, (-priority, delivery_id, run))
        if len(self._running) < self._concurrency:
            self._schedule_step()

    def poll_sequence(self, delivery_id: int, started_at: float, deadline: float) -> None:
        """A later run of a polling sequence was pushed: its handler's context says when the
        sequence started and times out (XSOAR ``get_schedule_metadata()``)."""
        self.sequences[delivery_id] = (started_at, deadline)

    def write(self, write: JournalWrite) -> None:
        """Run ``write`` in the next journal step's transaction, after the writes given
        before it and before the step's claims (see the module doc)."""
        self._writes.append(write)
        self._schedule_step()

    def apply(self, write: JournalWrite) -> None:
        """Run ``write`` in order with the writes given before it: at once if none waits
        (its journal calls commit by themselves), else in the next step, after them. A write
        that fails at once is logged and lost, as one that fails in a step alone."""
        if self._writes:
            self.write(write)
            return
        try:
            intake = write()
        except Exception:
            self.log.exception("journal_write_failed")
            return
        self._committed(intake)

    def cancel(self, delivery_id: int, reason: str = UNTASKED) -> None:
        """The daemon cancelled a delivery (:meth:`apply`: after the tasks read before the
        ``cancel``): its pending run never starts, and its running handler, whatever its
        run, is interrupted. Async handlers get ``CancelledError``; sync ones only see
        ``ctx.cancelled`` set and keep their slot until they return."""
        self.apply(functools.partial(self._cancel_write, delivery_id, reason))

    def _cancel_write(self, delivery_id: int, reason: str) -> Intake:
        before = self._journal.cancel(delivery_id)
        return Intake(then=functools.partial(self._cancelled, delivery_id, reason, before), withdrawn=delivery_id)

    def _cancelled(self, delivery_id: int, reason: str, before: RunState | None) -> None:
        if before is RunState.RUNNING:
            self._interrupt(delivery_id)
        self.log.info("delivery_cancelled", delivery_id=delivery_id, reason=reason, state=before)

    def _interrupt(self, delivery_id: int) -> None:
        execution = self._running.get(delivery_id)
        if execution is None:
            return
        execution.ctx.cancelled.set()
        if execution.cancellable and execution.task is not None:
            execution.task.cancel()

    async def stop(self, grace: float) -> None:
        """Start nothing new; wait up to ``grace`` seconds for running handlers, then cancel
        them (recorded as failed results). Idempotent; being cancelled while waiting leaves
        the handlers running (call :meth:`abort`)."""
        loop = asyncio.get_running_loop()
        if not self._stopping:
            self._stopping = True
            self._deadline = loop.time() + grace
        alive = set(self._tasks)
        if alive:
            _, alive = await asyncio.wait(alive, timeout=max(0.0, self._deadline - loop.time()))
        if alive:
            self.log.warning("shutdown_grace_expired", running=len(self._running), grace=grace)
            await self._cancel(alive)
        self._step()  # the finishes of the last handlers: committed and sent before we return

    async def abort(self) -> None:
        """Cancel every handler now (the agent is being torn down)."""
        self._stopping = True
        await self._cancel(set(self._tasks))
        self._step()

    async def _cancel(self, tasks: set[asyncio.Task[None]]) -> None:
        self._expired = True
        for execution in self._running.values():
            execution.ctx.cancelled.set()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    # -- the journal step: finishes and claims of one loop turn in one transaction --------

    def _schedule_step(self) -> None:
        if not self._step_scheduled and self._loop is not None:
            self._step_scheduled = True
            self._loop.call_soon(self._step)

    def _step(self) -> None:
        """In one transaction: the client's writes, the finishes of the handlers that
        returned, and claims for the free slots; then, once committed, the writes' frames
        and ``then``, the results, and the claimed runs' start."""
        self._step_scheduled = False
        writes, self._writes = self._writes, []
        ended, self._ended = self._ended, []
        free = 0 if self._stopping else self._concurrency - len(self._running)
        queued = [heapq.heappop(self._queue) for _ in range(min(free, len(self._queue)))]
        if not writes and not ended and not queued:
            return
        intakes: list[Intake]
        kept: list[bool | None]
        claimed: list[Claimed | None]
        alone = not writes and not queued and len(ended) == 1  # one finish: one UPDATE, atomic alone
        try:
            with self._journal.transaction(statements=1 if alone else 2):
                intakes = [write() for write in writes]
                take, rest = self._choose(free, queued, intakes)
                kept = list(self._journal.finish_many(
                    [(o.claimed.delivery_id, o.claimed.run, o.blob) for o in ended]))
                claimed = self._journal.claim_many(
                    [(delivery_id, run) for _, delivery_id, run in take], fresh=_fresh(intakes, _withdrawn(intakes)))
        except Exception:
            intakes = self._writes_one_by_one(writes)
            take, rest = self._choose(free, queued, intakes)
            kept, claimed = self._step_one_by_one(ended, take)
        for entry in rest:
            heapq.heappush(self._queue, entry)
        self._beginning = sum(claim is not None for claim in claimed)
        for intake in intakes:
            self._committed(intake)  # the acks, first; ``due`` already counts the runs they start
        for outcome, ok in zip(ended, kept, strict=True):
            if ok is not None:
                self._sent(outcome, ok)
        self._beginning = 0
        for claim in claimed:
            if claim is not None:
                self._begin(claim)
        if self._starts and self._loop is not None:
            self._loop.call_soon(self._send_starts)  # after the handlers' first steps
        if self._queue and not self._stopping and len(self._running) < self._concurrency:
            self._schedule_step()  # some claims started nothing (cancelled, unknown command)
        elif not self._has_due():
            self.outflow.nothing_due()
        if self.stepped is not None:
            self.stepped()

    def _committed(self, intake: Intake) -> None:
        """A write is committed: its frames go out, then its ``then`` runs."""
        if intake.acks:
            urgent = self.backlog > 0
            for blob in intake.acks:
                self.outflow.put(blob, urgent=urgent)
        for blob in intake.resend:
            self.outflow.put(blob)
        if intake.then is not None:
            intake.then()

    def _choose(
        self, free: int, queued: list[tuple[int, int, int]], intakes: list[Intake]
    ) -> tuple[list[tuple[int, int, int]], list[tuple[int, int, int]]]:
        """The runs to claim now, for ``free`` slots, among those taken off the queue and
        those the writes just journaled (highest priority, then oldest); and the rest, to
        queue. Once stopping, new runs stay pending in the journal, unqueued."""
        arrived = [] if self._stopping else [(-p, d, r) for i in intakes for p, d, r in i.new]
        if not arrived:
            return queued, []
        withdrawn = _withdrawn(intakes)
        if withdrawn:  # cancelled by a later write of the same step: journaled, never claimed
            arrived = [entry for entry in arrived if entry[1] not in withdrawn]
        candidates = sorted(queued + arrived)
        return candidates[:free], candidates[free:]

    def _writes_one_by_one(self, writes: list[JournalWrite]) -> list[Intake]:
        """The shared transaction failed (rolled back): each write in its own. One the
        journal cannot take is lost, and logged: for a burst of tasks, none is
        acknowledged, so the daemon pushes them again on the next session."""
        intakes: list[Intake] = []
        for write in writes:
            try:
                with self._journal.transaction():
                    intakes.append(write())
            except Exception:
                self.log.exception("journal_write_failed")
        return intakes

    def _step_one_by_one(
        self, ended: list[_Ended], take: list[tuple[int, int, int]]
    ) -> tuple[list[bool | None], list[Claimed | None]]:
        """The shared transaction failed (rolled back): each finish and claim in its own, so
        only the run the journal cannot take is lost (``None``). Such a finish stays
        ``running`` and fails on restart; such a claim stays ``pending`` until restart."""
        kept: list[bool | None] = []
        for outcome in ended:
            try:
                kept.append(self._journal.finish(outcome.claimed.delivery_id, outcome.claimed.run, outcome.blob))
            except Exception:
                self.log.exception("delivery_crashed", delivery_id=outcome.claimed.delivery_id,
                                   run=outcome.claimed.run)
                kept.append(None)
        claimed: list[Claimed | None] = []
        for _, delivery_id, run in take:
            try:
                claimed.append(self._journal.claim(delivery_id, run))
            except Exception:
                self.log.exception("delivery_crashed", delivery_id=delivery_id, run=run)
                claimed.append(None)
        return kept, claimed

    # -- one run -----------------------------------------------------------------------

    def _begin(self, claimed: Claimed) -> None:
        """A run was claimed (committed): say so, then start its handler."""
        command = self._commands.get(claimed.command)
        if command is None:
            served = ", ".join(sorted(self._commands))
            self._end(claimed, ok=False, error=f"unknown command {claimed.command!r} (this agent serves: {served})")
            return
        try:
            args = unpack(claimed.args)
        except msgspec.DecodeError as exc:
            self._end(claimed, ok=False, error=f"args are not valid MessagePack: {exc}")
            return
        if args is None:
            args = {}
        if not isinstance(args, dict):
            self._end(claimed, ok=False, error=f"args must be a JSON object, got {type(args).__name__}")
            return
        assert self._loop is not None
        delivery_id = claimed.delivery_id
        started, deadline = self.sequences.pop(delivery_id, (0.0, 0.0))
        ctx = Context(
            delivery_id=delivery_id, task_id=claimed.task_id, command=claimed.command,
            priority=claimed.priority, run=claimed.run, emit=self._emit_progress, alert=self.alert, loop=self._loop,
            args=args, poll_started_at=started, poll_deadline=deadline,
        )
        execution = _Execution(claimed, ctx, command.is_async)
        self._running[delivery_id] = execution
        self._starts[delivery_id] = execution
        self.log.info("command_started", delivery_id=delivery_id, run=claimed.run, command=claimed.command,
                      task_id=claimed.task_id)
        task = self._loop.create_task(self._execute(execution, command, args))
        execution.task = task
        self._tasks.add(task)
        task.add_done_callback(functools.partial(self._task_done, delivery_id))

    def _task_done(self, delivery_id: int, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        execution = self._running.get(delivery_id)
        if execution is not None and execution.task is task:  # cancelled before it started
            del self._running[delivery_id]
        if not task.cancelled() and task.exception() is not None:
            self.log.error("worker_crashed", error=repr(task.exception()))
        self._schedule_step()

    async def _execute(self, execution: _Execution, command: Command, args: dict[str, Any]) -> None:
        claimed, ctx = execution.claimed, execution.ctx
        run_args = dict(args)  # as delivered: the next run's when a schedule names none
        CURRENT_RUN.set(ctx)  # this task's own context (a sync handler's thread gets a copy)
        try:
            output = await self._invoke(command, args, ctx)
        except ErrorResult as exc:
            self._end(claimed, ok=False, error=exc.message)
            return
        except asyncio.CancelledError:
            task = asyncio.current_task()
            cancelled = task is not None and task.cancelling() > 0
            if cancelled and (self._expired or not ctx.is_cancelled()):
                # The agent is stopping and the grace period is over.
                ctx.cancelled.set()
                self._end(claimed, ok=False, error=STOPPED_WHILE_RUNNING)
                raise
            if cancelled and task is not None:
                task.uncancel()  # the daemon's cancel, handled here
            if not ctx.is_cancelled():
                self._end(claimed, ok=False, error="CancelledError: the command cancelled itself")
                return
            self._log_run(claimed, "command_cancelled")
            return
        except Exception as exc:
            self._end(claimed, ok=False, error=f"{type(exc).__name__}: {exc}")
            return
        finally:
            self._running.pop(claimed.delivery_id, None)
        if ctx.is_cancelled():
            self._log_run(claimed, "command_cancelled", finished_anyway=True)
            return
        outcome = interpret(output, run_args)
        if outcome.more:
            self._end(claimed, ok=True, output=outcome.output, schedule=outcome.schedule, more=outcome.more)
        else:
            self._end(claimed, ok=outcome.ok, output=outcome.output, error=outcome.error, schedule=outcome.schedule)

    async def _invoke(self, command: Command, args: dict[str, Any], ctx: Context) -> Any:
        kwargs = {"ctx": ctx} if command.takes_ctx else {}
        if command.is_async:
            return await command.function(args, **kwargs)
        return await asyncio.to_thread(command.function, args, **kwargs)

    def _send_starts(self) -> None:
        """Report the runs started in the last step as ``running``, except those whose
        handler already returned (one that does not wait): their result, sent after the
        next step, says when they started, so one frame per run goes out instead of two."""
        starts, self._starts = self._starts, {}
        for execution in starts.values():
            if execution.task is None or not execution.task.done():
                self._send_start(execution)

    def _send_start(self, execution: _Execution) -> None:
        claimed = execution.claimed
        self.outflow.put(MSGPACK.encode(Progress(delivery_id=claimed.delivery_id, run=claimed.run)))

    def _emit_progress(self, frame: Progress) -> None:
        if frame.delivery_id in self._running:
            start = self._starts.pop(frame.delivery_id, None)
            if start is not None:  # its start first, as if it had gone out already
                self._send_start(start)
            self.outflow.put(MSGPACK.encode(frame))

    def alert(self, body: AlertBody, delivery_id: int | None = None) -> None:
        """Journal an alert (in order with the journal writes before it), then send it; it
        is sent again on every session until tetherd names it in an ``alerted``."""
        def encode(alert_id: int) -> bytes:
            return MSGPACK.encode(Alert(id=alert_id, alert=body, raised_at=self._clock(), delivery_id=delivery_id))

        def write() -> Intake:
            alert_id, frame = self._journal.add_alert(encode)
            self.alerts_sent = max(self.alerts_sent, alert_id)
            return Intake(then=functools.partial(self.outflow.put, frame))

        self.apply(write)

    def _end(
        self, claimed: Claimed, *, ok: bool, output: msgspec.Raw = NIL, error: str = "",
        schedule: Schedule | None = None, more: list[tuple[msgspec.Raw, Schedule]] | None = None,
    ) -> None:
        """The run's result, for the outbox: committed in the next journal step, then sent."""
        result = Result(
            delivery_id=claimed.delivery_id, run=claimed.run, ok=ok, output=output, error=error,
            started_at=claimed.started_at, finished_at=self._clock(), schedule=schedule,
            sequels=[Sequel(schedule=s, output=o) for o, s in more or ()],
        )
        self._ended.append(_Ended(claimed, result))
        self._schedule_step()

    def _sent(self, outcome: _Ended, kept: bool) -> None:
        """The finish is committed (``kept``) or was refused (cancelled meanwhile)."""
        claimed, result = outcome.claimed, outcome.result
        if not kept:
            self._log_run(claimed, "result_dropped", reason=RunState.CANCELLED)
            return
        self.tasks_run += 1
        self.last_task = LastTask(command=claimed.command[:MAX_TEXT], at=result.finished_at, ok=result.ok)
        schedule = result.schedule
        if schedule is not None:
            self._log_run(claimed, "command_finished", ok=True, seconds=result.finished_at - result.started_at,
                          next_run_in=schedule.next_run_in_seconds, next_command=schedule.command)
        elif result.ok:
            self._log_run(claimed, "command_finished", ok=True, seconds=result.finished_at - result.started_at)
        else:
            self.log.warning("command_finished", delivery_id=claimed.delivery_id, run=claimed.run,
                             command=claimed.command, ok=False, error=result.error)
        self.outflow.put(outcome.blob)
        if self.finished is not None:
            self.finished(claimed, result)

    def _log_run(self, claimed: Claimed, event: str, **fields: object) -> None:
        """An info line about one run, with the fields that name it (no per-run ``bind``)."""
        self.log.info(event, delivery_id=claimed.delivery_id, run=claimed.run, command=claimed.command, **fields)
