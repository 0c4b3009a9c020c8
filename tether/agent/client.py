"""``AgentClient``: the agent's persistent session with ``tetherd``, reconnecting for ever.

One client = one agent identity = one journal. Nothing is global, so one process may run
hundreds of clients on one event loop (the benchmark's simulated fleet)::

    agent = Agent()                                   # the simulated agents' commands
    async with asyncio.TaskGroup() as tg:
        for i in range(500):
            journal = Journal(":memory:")             # or a file each: 3 fds per agent
            journal.set_identity(await enroll(url, key, machine_uuid=f"sim-{i}"))
            tg.create_task(AgentClient(journal, agent, hostname=f"sim-{i}").run())

Session (``tether.protocol.frames``): ``hello`` -> ``welcome``; then the outbox is re-sent,
and the daemon pushes ``task`` frames. A burst of tasks is journaled in one transaction
(the runner's journal step, which also claims those that find a free slot) and
acknowledged by one ``ack`` once that is committed. ``committed`` empties the outbox.
Every frame about one run of a delivery names the run (``run``, or ``runs`` beside a list of
ids, left empty when every run is 1, which is what a daemon that knows no runs sends and
expects), so a polling command's runs 2, 3 ... are told apart from run 1.

Batches: the hello announces :data:`~tether.protocol.frames.FEATURES`. A ``batch`` from the
daemon is applied frame by frame, in order, as if each had come alone (its tasks are one burst);
a bad frame inside is logged and skipped like a bad message. When the welcome says the
daemon speaks ``batch`` too, the frames waiting in the out-queue when the writer wakes up
(acks, progress, results) go out as one ``batch`` message (at most :data:`BATCH_MAX_BYTES`,
a frame alone as itself); to an older daemon every frame goes in its own message. While
the runner has frames due within moments (runs wait for a slot, or were just started, or
returned and wait for their finish), the writer lets them gather first: up to
:data:`HOLD_FRAMES` frames, for at most :data:`HOLD_SECONDS`; a frame after which
nothing is due, an urgent one, or the close sends at once. They then share one message,
one commit in the daemon and one ``committed`` back. An ``ack`` is urgent while runs wait
for a slot (it frees the daemon's window); an idle agent's ack goes with the first frame
of the runs it started (a quick command's result, a slow one's start report).

Reconnects use exponential backoff with full jitter (``backoff.py``), reset after every
``welcome``, and wait at least the daemon's ``retry_after``. Close codes 4010
(unauthorized), 4020 (replaced) and 4002 (unsupported version) are fatal:
:meth:`AgentClient.run` raises :class:`FatalSessionError` and never reconnects.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import random
import ssl
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

import tether
from tether.protocol import (
    MSGPACK,
    PROTOCOL_VERSION,
    Ack,
    Cancel,
    Committed,
    Error,
    ErrorCode,
    Hello,
    ProtocolError,
    Task,
    Welcome,
    decode_from_daemon,
    run_refs,
    split_refs,
)
from tether.protocol.codec import encode_batch, unbatch
from tether.protocol.frames import FEATURES, MAX_HOLDING, MAX_IDS, Batch, chunked
from tether.protocol.lifecycle import DeliveryState, RunState

from . import host
from .backoff import DEFAULT_BASE, DEFAULT_CAP, reconnect_delay
from .builtins import BUILTINS
from .journal import Accepted, Identity, Journal
from .logfmt import EventLog
from .runner import Intake, Runner
from .sdk import Agent, Command
from .tls import TLSFiles, client_context, explain

FATAL_CODES: dict[int, str] = {
    ErrorCode.UNAUTHORIZED: "the daemon does not accept this agent's credentials (revoked or removed); "
                            "enroll this state directory again as a new agent: "
                            "tether-agent enroll --server URL --key KEY --force",
    ErrorCode.REPLACED: "another agent process connected with this identity and replaced this one; "
                        "run one tether-agent per state directory",
    ErrorCode.UNSUPPORTED_VERSION: f"the daemon does not speak protocol version {PROTOCOL_VERSION}; "
                                   "upgrade tether-agent (or the daemon)",
}
"""Session close codes after which reconnecting cannot help, and what to do instead."""

REFUSED_RESULT_CODES = frozenset({ErrorCode.ILLEGAL_TRANSITION, ErrorCode.UNKNOWN_DELIVERY, ErrorCode.FORBIDDEN})
"""An ``error`` with one of these codes and ``ref`` = a delivery in the outbox: the daemon
will never take that result; keeping it would re-send it for ever. ``ref`` names no run,
so every unconfirmed result of the delivery is dropped (there is at most one: see
:meth:`Journal.accept <tether.agent.journal.Journal.accept>`)."""

STORAGE_RETRY = 2.0
"""Seconds before re-sending uncommitted results when the daemon's store refused a write
(1503) and said no ``retry_after``."""

PRUNE_EVERY = 3600.0

BATCH_MAX_BYTES = 64 * 1024
"""Most bytes of frames the agent puts in one ``batch``: far below any daemon's message
limit (tetherd's ``max_frame_bytes``, 1 MiB by default), so batching never makes a message
too big that would have passed alone. A bigger frame is sent in its own message."""

HOLD_FRAMES = 64
"""While the runner has frames due, the writer sends once this many frames are waiting
(a frame over ``BATCH_MAX_BYTES / HOLD_FRAMES`` sends at once, so a batch stays under
:data:`BATCH_MAX_BYTES`) ..."""
HOLD_SECONDS = 0.005
"""... or once the first of them has waited this long. Chosen on the drain benchmark
(docs/performance.md): about 26 results per message instead of 4, so a sixth of the
messages, tetherd commits and ``committed`` frames, for at most 5 ms more per result of an
agent that has runs waiting anyway."""


class FatalSessionError(Exception):
    """The daemon ended the session in a way reconnecting cannot fix."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def name(self) -> str:
        try:
            return ErrorCode(self.code).slug
        except ValueError:
            return str(self.code)

    def __str__(self) -> str:
        return f"{self.name} ({self.code}): {self.message}"


class NotEnrolledError(Exception):
    """The journal holds no identity."""

    def __init__(self) -> None:
        super().__init__("not enrolled: run tether-agent enroll --server URL --key KEY")


@dataclass(slots=True)
class _SessionEnd:
    """How one connection ended, for the reconnect decision."""

    welcomed: bool = False
    code: int | None = None
    reason: str = ""
    retry_after: float | None = None


class AgentClient:
    """Serve ``agent``'s commands (plus the built-ins) for the identity in ``journal``.

    ``tls``: the CA and client certificate for a wss:// daemon; ``None``, the ones the
    identity was enrolled with. They are loaded when :meth:`run` starts, which raises
    :class:`~tether.agent.tls.TLSFileError` for a bad one.

    ``run()`` returns after :meth:`stop` and a clean close (1000), raises
    :class:`FatalSessionError` on 4010/4020/4002, and never returns otherwise. The journal
    is not closed by the client.
    """

    def __init__(
        self,
        journal: Journal,
        agent: Agent | None = None,
        *,
        builtins: bool = True,
        concurrency: int = 4,
        backoff_base: float = DEFAULT_BASE,
        backoff_cap: float = DEFAULT_CAP,
        handshake_timeout: float = 10.0,
        shutdown_grace: float = 10.0,
        ping_interval: float | None = 20.0,
        hostname: str | None = None,
        platform: str | None = None,
        rand: Callable[[], float] = random.random,
        log: EventLog | None = None,
        tls: TLSFiles | None = None,
        max_frame_bytes: int = host.MAX_FRAME_BYTES,
    ) -> None:
        self._journal = journal
        self._max_frame_bytes = max_frame_bytes
        self._tls_files = tls
        self._ssl: ssl.SSLContext | None = None
        commands: dict[str, Command] = dict(BUILTINS.commands) if builtins else {}
        if agent is not None:
            commands.update(agent.commands)  # the user's commands win over built-ins
        self.commands = commands
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._handshake_timeout = handshake_timeout
        self._grace = shutdown_grace
        self._ping_interval = ping_interval
        self._hostname = hostname if hostname is not None else host.hostname()
        self._platform = platform if platform is not None else host.platform_name()
        self._rand = rand
        self._base_log = log or EventLog()
        self._log = self._base_log
        self._stopping = asyncio.Event()
        self._out: asyncio.Queue[bytes | None] | None = None
        self._flush = asyncio.Event()
        """Set when the writer must not hold what is waiting any longer (see :meth:`_hold`)."""
        self._arrivals: list[Task] | None = None
        """The burst of tasks being read, to journal in the runner's next step."""
        self._last_prune = 0.0
        self._resend: asyncio.TimerHandle | None = None
        """A re-send of the outbox, due after the daemon's store refused a write (1503)."""
        self.sessions = 0
        """How many sessions were welcomed so far."""
        self._window = 0
        """The session's window (its welcome's): how many pushed tasks may await an ack."""
        self._unacked = 0
        """Tasks pushed in this session whose burst is not journaled and acknowledged yet."""
        self._refused = 0
        """Tasks refused in this session for being pushed beyond the window."""
        self._runner = Runner(
            commands, journal, self._emit, concurrency=concurrency, log=self._base_log,
        )

    @property
    def connected(self) -> bool:
        """A session is open (welcomed) right now."""
        return self._out is not None

    def stop(self) -> None:
        """Ask :meth:`run` to finish: start nothing new, let running commands end (up to
        ``shutdown_grace``), send their results, close the session with 1000."""
        self._stopping.set()

    async def run(self) -> None:
        identity = self._journal.identity()
        if identity is None:
            raise NotEnrolledError()
        self._ssl = client_context(identity.server, identity.tls if self._tls_files is None else self._tls_files)
        self._log = self._base_log.bind(agent_id=identity.agent_id)
        self._runner.log = self._log
        if not private_transport(identity.server):
            self._log.warning("insecure_transport", server=identity.server,
                              hint="the agent's token and every task's args travel unencrypted: use a wss:// URL "
                                   "(tether-agent set-server) or a tetherd on this host")
        for delivery_id, run in self._journal.recover():
            self._log.warning("delivery_interrupted", delivery_id=delivery_id, run=run, outcome=DeliveryState.FAILED)
        self._prune()
        self._runner.start()
        for priority, delivery_id, run in self._journal.pending():
            self._runner.submit(priority, delivery_id, run)
        try:
            await self._connect_loop(identity)
        except FatalSessionError:
            await self._runner.stop(self._grace)
            raise
        except BaseException:
            await self._runner.abort()
            raise
        await self._runner.stop(self._grace)

    # -- connection loop ---------------------------------------------------------------

    async def _connect_loop(self, identity: Identity) -> None:
        attempt = 0
        while not self._stopping.is_set():
            identity = self._journal.identity() or identity  # a merge changes its id
            try:
                end = await self._session(identity)
            except (OSError, TimeoutError, InvalidHandshake) as exc:
                self._log.warning("connect_failed", server=identity.server, error=_describe(exc),
                                  hint=explain(exc, identity.server))
                end = _SessionEnd()
            except ConnectionClosed as exc:
                end = _ended(exc, welcomed=False)
            if end.welcomed:
                attempt = 0
            if end.code in FATAL_CODES:
                message = FATAL_CODES[end.code]
                self._log.error("session_refused", code=end.code, reason=end.reason, fatal=True, hint=message)
                raise FatalSessionError(end.code, f"{end.reason + ': ' if end.reason else ''}{message}")
            if self._stopping.is_set():
                return
            delay = reconnect_delay(
                attempt, base=self._backoff_base, cap=self._backoff_cap, rand=self._rand, retry_after=end.retry_after,
            )
            attempt += 1
            self._log.info("reconnect_scheduled", code=end.code, reason=end.reason or None, attempt=attempt, delay=delay)
            try:
                async with asyncio.timeout(delay):
                    await self._stopping.wait()
            except TimeoutError:
                pass

    async def _session(self, identity: Identity) -> _SessionEnd:
        async with connect(
            identity.server,
            open_timeout=self._handshake_timeout,
            ping_interval=self._ping_interval,
            compression=None,  # small MessagePack frames; deflate costs ~100 KiB per session
            max_size=self._max_frame_bytes,
            user_agent_header=host.USER_AGENT,
            ssl=self._ssl,
        ) as ws:
            held = self._journal.holding()
            if len(held) > MAX_HOLDING:
                # A hello names at most MAX_HOLDING: the daemon may push one of the others
                # again, and the journal acknowledges it again without running it.
                self._log.warning("holding_truncated", held=len(held), named=MAX_HOLDING)
                held = held[:MAX_HOLDING]
            holding, holding_runs = split_refs(held)
            hello = Hello(
                role="agent", version=PROTOCOL_VERSION, token=identity.token, agent_id=identity.agent_id,
                hostname=self._hostname, platform=self._platform, machine_uuid=identity.machine_uuid,
                agent_version=tether.__version__, commands=sorted(self.commands),
                holding=holding, holding_runs=holding_runs, features=list(FEATURES),
            )
            await ws.send(MSGPACK.encode(hello))
            try:
                async with asyncio.timeout(self._handshake_timeout):
                    data = await ws.recv()
            except TimeoutError:
                self._log.warning("handshake_timeout", seconds=self._handshake_timeout)
                return _SessionEnd()
            except ConnectionClosed as exc:
                return _ended(exc, welcomed=False)
            try:
                first = decode_from_daemon(data)
            except ProtocolError as exc:
                self._log.warning("handshake_failed", error=exc.message)
                return _SessionEnd()
            if isinstance(first, Error):
                return _SessionEnd(code=first.code, reason=f"{first.name}: {first.message}", retry_after=first.retry_after)
            if not isinstance(first, Welcome):
                self._log.warning("handshake_failed", error=f"expected welcome, got {type(first).__name__}")
                return _SessionEnd()
            if first.agent_id and first.agent_id != identity.agent_id:
                # An admin merged this agent into another (tetherctl agent merge): it is that one now.
                self._journal.adopt_agent_id(first.agent_id)
                self._log.warning("agent_merged", old=identity.agent_id, agent_id=first.agent_id)
                self._log = self._base_log.bind(agent_id=first.agent_id)
                self._runner.log = self._log
            return await self._serve(ws, first)

    async def _serve(self, ws: ClientConnection, welcome: Welcome) -> _SessionEnd:
        """The open session: read frames until the connection closes."""
        self.sessions += 1
        out: asyncio.Queue[bytes | None] = asyncio.Queue()
        # Snapshot the outbox and open the queue in one step (no await between): a result
        # finished later goes through the queue, one finished earlier is in the snapshot.
        outbox = self._journal.outbox()
        for blob in outbox:
            out.put_nowait(blob)
        self._out = out
        self._flush.clear()
        self._window, self._unacked, self._refused = welcome.window, 0, 0
        batching = "batch" in welcome.features
        self._log.info("session_open", session=welcome.session_id, window=welcome.window, resent=len(outbox),
                       batch=batching)
        writer = asyncio.create_task(self._write(ws, out, batching=batching))
        closer = asyncio.create_task(self._close_when_stopping(out))
        try:
            end = await self._read(ws)
        finally:
            self._out = None
            self._runner.step_now()  # journal the tasks read (their ack is lost with the session)
            for child in (closer, writer):
                child.cancel()
            await asyncio.wait((closer, writer))
        for child in (closer, writer):
            if not child.cancelled() and child.exception() is not None:
                self._log.error("session_task_crashed", error=repr(child.exception()))
        if self._refused:
            self._log.warning("pushes_refused", count=self._refused, window=self._window)
        self._log.info("session_closed", code=end.code, reason=end.reason or None)
        return end

    async def _read(self, ws: ClientConnection) -> _SessionEnd:
        error: Error | None = None
        while True:
            try:
                data = await ws.recv()
            except ConnectionClosed as exc:
                end = _ended(exc, welcomed=True)
                if error is not None:  # the daemon said why before closing
                    end.reason = f"{error.name}: {error.message}"
                    end.retry_after = error.retry_after
                    if end.code is None or end.code < 4000:
                        end.code = error.code
                return end
            try:
                frame = decode_from_daemon(data)
            except ProtocolError as exc:
                self._log.warning("bad_frame", code=int(exc.code), error=exc.message)
                continue
            if isinstance(frame, Batch):
                for inner in unbatch(frame, isinstance(data, bytes), to_daemon=False):
                    if isinstance(inner, ProtocolError):
                        self._log.warning("bad_frame", code=int(inner.code), error=inner.message)
                    else:
                        error = self._apply(inner) or error
            else:
                error = self._apply(frame) or error

    def _apply(self, frame: object) -> Error | None:
        """Act on one frame from the daemon; a session error (4xxx) is returned, to explain
        the close that follows it."""
        if isinstance(frame, Task):
            if self._unacked >= self._window:
                # The daemon may have at most `window` tasks unacknowledged: one more is not
                # journaled (nor acknowledged); a daemon that keeps its word re-pushes it later.
                if not self._refused:
                    self._log.warning("push_refused", reason="beyond the window", window=self._window,
                                      delivery_id=frame.delivery_id)
                self._refused += 1
                return None
            self._unacked += 1
            if self._arrivals is None:
                # Journal the tasks in the runner's next step, once the frames already
                # received are all read: a burst becomes one transaction and one ack.
                self._arrivals = []
                self._runner.write(functools.partial(self._accept, self._arrivals))
            self._arrivals.append(frame)
            if frame.poll_deadline:  # a later run of a polling sequence: get_schedule_metadata()
                self._runner.sequences[frame.delivery_id] = (frame.poll_deadline - frame.poll_timeout,
                                                             frame.poll_deadline)
            return None
        # Keep order: the tasks read so far are journaled (and acknowledged) first. Before a
        # cancel they are not claimed yet: they start in the next step, once every frame
        # already received is applied, so a cancel read with its task (a frozen or slow agent)
        # removes it before it starts. (Other frames keep the one-commit journal-and-claim.)
        self._runner.step_now(claiming=not isinstance(frame, Cancel))
        self._handle(frame)
        return frame if isinstance(frame, Error) and frame.code >= 4000 else None

    async def _write(self, ws: ClientConnection, out: asyncio.Queue[bytes | None], *, batching: bool) -> None:
        """Send queued frames in order; ``None`` means close the session cleanly. With
        ``batching``, what is waiting goes out as one ``batch`` (never the close)."""
        carried: list[bytes | None] = []  # taken from the queue, but not part of the last batch
        while True:
            held = not carried
            blob = carried.pop() if carried else await out.get()
            try:
                if blob is None:
                    await ws.close(1000, "agent stopping")
                    return
                if batching and held and self._runner.due:
                    await self._hold(out)
                self._flush.clear()  # a frame put from here on asks again
                if not batching or out.empty():
                    await ws.send(blob)
                    continue
                blobs, size = [blob], len(blob)
                while not out.empty():
                    more = out.get_nowait()
                    if more is None or size + len(more) > BATCH_MAX_BYTES:
                        carried.append(more)
                        break
                    blobs.append(more)
                    size += len(more)
                await ws.send(blobs[0] if len(blobs) == 1 else encode_batch(MSGPACK, blobs))
            except ConnectionClosed:
                return

    async def _hold(self, out: asyncio.Queue[bytes | None]) -> None:
        """Let the frames that are about to follow join this message (see the module doc):
        until :data:`HOLD_FRAMES` are waiting, an urgent frame is put, the runner has no
        more due, or :data:`HOLD_SECONDS`."""
        if self._flush.is_set() or _enough(out):
            return  # (an ack is waiting: it goes now, without arming a timer first)
        timer = asyncio.get_running_loop().call_later(HOLD_SECONDS, self._flush.set)
        try:
            await self._flush.wait()
        finally:
            timer.cancel()

    async def _close_when_stopping(self, out: asyncio.Queue[bytes | None]) -> None:
        await self._stopping.wait()
        await self._runner.stop(self._grace)  # results of running commands go out first
        out.put_nowait(None)
        self._flush.set()

    def _emit(self, blob: bytes, *, urgent: bool = False) -> None:
        """Send a frame if a session is open; else drop it (results wait in the outbox).
        ``urgent``: the writer must not hold it back for more. A frame after which the
        runner has no more due ends the hold too: nothing would join it."""
        out = self._out
        if out is None:
            return
        out.put_nowait(blob)
        if urgent or _enough(out) or len(blob) > BATCH_MAX_BYTES // HOLD_FRAMES or not self._runner.due:
            self._flush.set()

    # -- frames from the daemon --------------------------------------------------------

    def _accept(self, tasks: list[Task]) -> Intake:
        """Journal a burst of tasks (inside the runner's journal step); acknowledge it once
        that is committed."""
        if self._arrivals is tasks:
            self._arrivals = None  # the frames read from now on are the next burst
        accepted = self._journal.accept(tasks)
        return Intake(accepted.new, accepted.fresh, functools.partial(self._accepted, accepted, len(tasks),
                                                                      self.sessions))

    def _accepted(self, accepted: Accepted, tasks: int = 0, session: int = 0) -> None:
        if session == self.sessions:  # the burst's tasks leave the window (acknowledged or ignored)
            self._unacked = max(0, self._unacked - tasks)
        for chunk in chunked(accepted.ack, MAX_IDS):  # an ack names at most MAX_IDS
            ids, runs = split_refs(chunk)
            # Urgent while runs wait for a slot: it frees the daemon's window for more. If it
            # started them all, it may wait (moments) for their first frames.
            self._emit(MSGPACK.encode(Ack(delivery_ids=ids, runs=runs)), urgent=self._runner.backlog > 0)
        for blob in accepted.resend:
            self._emit(blob)
        self._log.info("tasks_received", new=len(accepted.new), duplicate=accepted.duplicates, resent=len(accepted.resend))

    def _handle(self, frame: object) -> None:
        if isinstance(frame, Cancel):
            before = self._journal.cancel(frame.delivery_id)
            if before is RunState.RUNNING:
                self._runner.cancel(frame.delivery_id)
            self._log.info("delivery_cancelled", delivery_id=frame.delivery_id, reason=frame.reason, state=before)
        elif isinstance(frame, Committed):
            self._journal.confirm(run_refs(frame.delivery_ids, frame.runs))
            self._log.debug("results_committed", count=len(frame.delivery_ids))
            self._prune()
        elif isinstance(frame, Error):
            self._on_error(frame)
        else:
            self._log.warning("unexpected_frame", frame=type(frame).__name__)

    def _on_error(self, frame: Error) -> None:
        if frame.code == ErrorCode.STORAGE_UNAVAILABLE:
            # The daemon could not store a report (disk full, database locked): the results
            # are still in the outbox; send them again once it has had time to recover.
            self._log.warning("daemon_storage_unavailable", error=frame.message, retry_after=frame.retry_after)
            if self._resend is None:
                self._resend = asyncio.get_running_loop().call_later(
                    frame.retry_after or STORAGE_RETRY, self._resend_outbox)
        elif frame.ref is not None and frame.code in REFUSED_RESULT_CODES and (dropped := self._journal.refuse(frame.ref)):
            self._log.warning("result_refused", delivery_id=frame.ref, results=dropped, code=frame.code,
                              error=frame.message)
        elif frame.code >= 4000:
            self._log.warning("session_error", code=frame.code, name=frame.name, error=frame.message)
        else:
            self._log.warning("daemon_error", code=frame.code, name=frame.name, ref=frame.ref, error=frame.message)

    def _resend_outbox(self) -> None:
        self._resend = None
        if self._out is None:
            return  # no session: the next one sends the outbox first anyway
        outbox = self._journal.outbox()
        for blob in outbox:
            self._emit(blob)
        self._log.info("results_resent", count=len(outbox))

    def _prune(self) -> None:
        now = time.monotonic()
        if self._last_prune and now - self._last_prune < PRUNE_EVERY:
            return
        self._last_prune = now
        pruned = self._journal.prune()
        if pruned:
            self._log.info("journal_pruned", deliveries=pruned)


def private_transport(server: str) -> bool:
    """Whether what is sent to ``server`` is safe from the network: wss://, or ws:// to this
    host (loopback)."""
    parts = urllib.parse.urlsplit(server)
    if parts.scheme != "ws":
        return True
    hostname = parts.hostname or ""
    if hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


def _enough(out: asyncio.Queue[bytes | None]) -> bool:
    """The frames waiting, with the one the writer holds, make :data:`HOLD_FRAMES`."""
    return out.qsize() + 1 >= HOLD_FRAMES


def _ended(exc: ConnectionClosed, *, welcomed: bool) -> _SessionEnd:
    if exc.rcvd is None:
        return _SessionEnd(welcomed=welcomed, code=1006, reason="connection lost")
    return _SessionEnd(welcomed=welcomed, code=exc.rcvd.code, reason=exc.rcvd.reason)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
