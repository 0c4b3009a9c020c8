"""What an agent reports (acks, progress, results), turned into store writes.

One WebSocket message may carry one frame or a ``batch`` of them; either way its reports
become as few store operations as keep their order: one for every ack in it, one for
its progress reports, one for every result (each writing its state changes with one
``executemany`` per shape). (Per delivery an agent's frames come in the order
ack, progress, result, so ordering the operations that way keeps each delivery's order.)
A bare start report (progress with no percent and no text) whose result is in the same
message is not written: the result says when the run started, and the delivery goes
from ``acked`` to ``done`` in one write instead of two. Likewise an ack whose run's result
is in the same message (an idle agent sends both at once for a quick command): the
result's write records the ack too, and the delivery goes from ``queued`` to ``done`` in
one write instead of two store operations (in a fan-out to 10,000 online agents, 10,000
fewer operations, each a future, its callback, a transaction step and an ``UPDATE``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import msgspec

from ..protocol.codec import MSGPACK, Codec, error_frame, pack, to_msgpack
from ..protocol.errors import ErrorCode, ProtocolError
from ..protocol.frames import (
    Ack,
    Alert,
    Frame,
    Progress,
    Result,
    Schedule,
    StateReport,
    progress_text,
    run_refs,
)
from ..protocol.lifecycle import WaitPlan
from ..protocol.polling import InvalidSchedule, plan_next_run
from ..protocol.session import unexpected
from ..protocol.values import output_problem, value_problem
from .effects import Ref
from .operations import Operations
from .session import AgentSession
from .store import ResultIn


def _finite_or_0(seconds: float) -> float:
    return seconds if math.isfinite(seconds) else 0.0


def checked_result(frame: Result, output: bytes, floor: float, codec: Codec = MSGPACK) -> ResultIn:
    """A result as the store takes it, its schedule checked against the polling rules
    (``protocol.polling``): an interval below ``floor`` is raised (the history says so); a
    schedule that cannot be honoured ends the sequence as failed, saying why; so does an
    output no console could be shown (``protocol.values``)."""
    if not (math.isfinite(frame.started_at) and math.isfinite(frame.finished_at)):
        # NaN reaches SQLite as NULL: a time the agent could not give is left to the daemon's clock.
        frame = msgspec.structs.replace(frame, started_at=_finite_or_0(frame.started_at),
                                        finished_at=_finite_or_0(frame.finished_at))
    def result(ok: bool, output: bytes, error: str = "", plan: WaitPlan | None = None,
               sequels: list[tuple[WaitPlan, bytes]] | None = None) -> ResultIn:
        return ResultIn(delivery_id=frame.delivery_id, ok=ok, output=output, error=error, started_at=frame.started_at,
                        finished_at=frame.finished_at, run=frame.run, plan=plan, sequels=sequels or [])

    problem = output_problem(output)
    if problem is not None:
        return result(False, pack(None), f"invalid output: {problem}")
    schedule = frame.schedule
    if schedule is None or not frame.ok:
        return result(frame.ok, output, frame.error)
    try:
        plan = run_plan(schedule, floor)
        sequels = []
        for sequel in frame.sequels[:MAX_SEQUELS]:
            partial = to_msgpack(sequel.output, codec)
            problem = output_problem(partial)
            if problem is not None:
                raise InvalidSchedule(f"a further sequence's partial result holds {problem}")
            sequels.append((run_plan(sequel.schedule, floor), partial))
        if len(frame.sequels) > MAX_SEQUELS:
            raise InvalidSchedule(f"a run may start at most {MAX_SEQUELS} further sequences, not {len(frame.sequels)}")
    except InvalidSchedule as exc:
        return result(False, output, f"invalid schedule: {exc}")
    return result(True, output, plan=plan, sequels=sequels)


MAX_SEQUELS = 100
"""Further polling sequences one run may start: each is a task; a peer's list is bounded."""


def run_plan(schedule: Schedule, floor: float) -> WaitPlan:
    """A run's schedule checked against the polling rules; raise :class:`InvalidSchedule`."""
    if not schedule.command.strip():
        raise InvalidSchedule("the schedule names no command")
    args_problem = value_problem(schedule.args)  # the next run's args: a task's, as a console gives them
    if args_problem is not None:
        raise InvalidSchedule(f"the args hold {args_problem}")
    plan = plan_next_run(schedule.next_run_in_seconds, schedule.timeout_in_seconds, floor)
    return WaitPlan(command=schedule.command, args=pack(schedule.args), interval=plan.interval, timeout=plan.timeout,
                   note=plan.note, poll_message=schedule.poll_message,
                   items_remaining=max(0, min(schedule.items_remaining, 2**62)))


def check_result(frame: Result, codec: Codec, floor: float) -> ResultIn | ProtocolError:
    """A result as the store takes it (:func:`checked_result`), or the error to answer it with."""
    try:
        output = to_msgpack(frame.output, codec)
    except Exception:
        return ProtocolError(ErrorCode.INVALID_FRAME, "result output is not valid", ref=frame.delivery_id)
    return checked_result(frame, output, floor, codec)


def check_results(frames: Sequence[Frame | ProtocolError], codec: Codec, floor: float) -> list[Report]:
    """The frames of one message with each ``result`` replaced by :func:`check_result`'s
    answer. It only reads the frames: the server calls it in a worker thread for a large
    message, whose outputs and args take long to walk."""
    return [check_result(frame, codec, floor) if isinstance(frame, Result) else frame for frame in frames]


Report = Frame | ProtocolError | ResultIn
"""One frame of a message, after :func:`check_results`."""


def submit_reports(session: AgentSession, codec: Codec, reports: Sequence[Report], operations: Operations,
                   floor: float) -> int:
    """Queue the operations for one message's frames (applied on commit). A
    ``result`` is checked here (:func:`checked_result`) unless :func:`check_results` did it
    already (the server does, in a worker thread, for a large message). Returns how many of
    the frames were bad (answered with an error at once)."""
    acks: list[Ref] = []
    sent_at: dict[int, float] = {}
    progress: list[tuple[Ref, str, bool]] = []
    results: list[ResultIn] = []
    alerts: list[Alert] = []
    state: StateReport | None = None
    bad = 0
    for frame in reports:
        if isinstance(frame, Result):
            frame = check_result(frame, codec, floor)
        if isinstance(frame, ResultIn):
            results.append(frame)
        elif isinstance(frame, ProtocolError):
            bad += 1
            session.tell(error_frame(frame))
        elif isinstance(frame, Ack):
            refs = run_refs(frame.delivery_ids, frame.runs)
            session.acked(refs, sent_at)
            acks += refs
        elif isinstance(frame, Progress):
            text = progress_text(frame.percent, frame.message)
            progress.append(((frame.delivery_id, frame.run), text, frame.percent is None and not frame.message))
        elif isinstance(frame, Alert):
            alerts.append(frame)
        elif isinstance(frame, StateReport):
            state = frame  # the last one of a message supersedes the others
        else:  # not an agent's report: the session core says how it is answered
            bad += 1
            session.tell(error_frame(unexpected("agent", frame)))
    now = operations.clock.time()
    finished = {(r.delivery_id, r.run) for r in results}
    acked: dict[int, float] = {}
    if finished and acks:
        acked = {d: sent_at.get(d, now) for d, run in acks if (d, run) in finished}
        acks = [ref for ref in acks if ref not in finished]
    if acks:
        operations.acknowledge(session, acks, sent_at, now)
    started = [(ref, text) for ref, text, bare in progress if not (bare and ref in finished)]
    if started:
        operations.progress(session, started, now)
    if results:
        operations.results(session, results, acked, now)
    if alerts:
        bad += operations.alerts(session, alerts, now)
    if state is not None:
        operations.agent_state(session, state, now)
    return bad
