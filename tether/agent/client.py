"""``AgentClient``: the agent's persistent session with ``tetherd``, reconnecting for ever.

One client = one agent identity = one journal. Nothing is global, so one process may run
hundreds of clients on one event loop (the benchmark's simulated fleet)::

    agent = Agent()                                   # the simulated agents' commands
    async with asyncio.TaskGroup() as tg:
        for i in range(500):
            journal = Journal(":memory:")             # or a file each: 3 fds per agent
            journal.set_identity(await enroll(url, key, machine_uuid=f"sim-{i}"))
            tg.create_task(AgentClient(journal, agent, ClientSettings(hostname=f"sim-{i}")).run())

The session's rules are :mod:`tether.protocol.session`'s (the hello, what the first answer
means, the window, which results the daemon refuses for good, which close codes are fatal);
this module only moves messages between the connection, that core, the journal and the
runner. ``hello`` -> ``welcome``; then the outbox is re-sent, and the daemon pushes ``task``
frames. The frames of a message (a ``batch``'s one by one) are applied in the order they
came: the tasks read together are journaled in one transaction (the runner's journal step,
which also claims those that find a free slot) and acknowledged by one ``ack`` once that is
committed; a ``cancel``, a ``committed`` (the outbox forgets those results) and a refused
result are journal writes in order with them (:meth:`Runner.apply
<tether.agent.runner.Runner.apply>`). No run starts before every frame already received is
applied, so a task cancelled by a frame read with it never starts. Every frame about one run
of a delivery names the run (``run``, or ``runs`` beside a list of ids, left empty when every
run is 1, which is what a daemon that knows no runs sends and expects), so a polling
command's runs 2, 3 ... are told apart from run 1.

What the agent sends goes through the runner's :class:`~tether.agent.outflow.Outflow`, which
says when a message goes (batches, and the hold that lets frames due within moments join
it); the writer here only sends what it gives.

Reconnects use exponential backoff with full jitter (``backoff.py``), reset after every
``welcome``, and wait at least the daemon's ``retry_after``. After a close code in
:data:`~tether.protocol.session.AGENT_FATAL` (4010 unauthorized, 4020 replaced, 4002
unsupported version) :meth:`AgentClient.run` raises :class:`~tether.protocol.errors.SessionClosed`
and never reconnects.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import ipaddress
import random
import ssl
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

import tether
from tether.protocol import (
    MSGPACK,
    Ack,
    Cancel,
    Committed,
    Error,
    ErrorCode,
    Frame,
    ProtocolError,
    Result,
    Task,
    run_refs,
    split_refs,
)
from tether.protocol.agent_config import ConfigError, check_settings, config_hash, differences, effective
from tether.protocol.agent_state import DEFAULT_STATE_INTERVAL
from tether.protocol.codec import encode_batch
from tether.protocol.errors import SessionClosed, is_session_error
from tether.protocol.frames import (
    MAX_HOLDING,
    MAX_IDS,
    Alerted,
    Configure,
    Drained,
    StateReport,
    Welcome,
    chunked,
)
from tether.protocol.lifecycle import DeliveryState, RunState
from tether.protocol.session import (
    AGENT_FATAL,
    DRAINED,
    REFUSED_RESULT_CODES,
    AgentWindow,
    ClientSession,
    agent_hello,
)

from . import host
from .backoff import DEFAULT_BASE, DEFAULT_CAP, reconnect_delay
from .builtins import BUILTINS
from .journal import RESTARTED_WHILE_RUNNING, Accepted, Claimed, Identity, Journal, Ref
from .logfmt import LOGGER, EventLog
from .runner import NOTHING, Intake, Runner
from .sdk import Agent, Command
from .tls import TLSFiles, client_context, explain

FatalSessionError = SessionClosed
"""What :meth:`AgentClient.run` raises when reconnecting cannot help (the name from before
the agent and the console shared :mod:`tether.protocol.errors`' tree)."""

STORAGE_RETRY = 2.0
"""Seconds before re-sending uncommitted results when the daemon's store refused a write
(1503) and said no ``retry_after``."""

PRUNE_EVERY = 3600.0


@dataclass(frozen=True, slots=True)
class Ran:
    """One run ``tether-agent once`` ran (or found interrupted by a crash), as it ended."""

    delivery_id: int
    run: int
    task_id: int
    command: str
    ok: bool
    error: str = ""


class OnceUnfinished(Exception):
    """``once`` could not take its deliveries: the daemon could not be reached, refused the
    session, or does not say when an agent's queue is pushed (an older tetherd)."""


class NotEnrolledError(Exception):
    """The journal holds no identity."""

    def __init__(self) -> None:
        super().__init__("not enrolled: run tether-agent enroll --server URL --key KEY")


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientSettings:
    """How an :class:`AgentClient` behaves: what ``tether-agent run``'s flags set."""

    builtins: bool = True
    """Serve the built-in commands (:mod:`.builtins`) beside the agent's own."""
    concurrency: int = 4
    """Commands run at once."""
    backoff_base: float = DEFAULT_BASE
    """First reconnect delay (exponential backoff with full jitter, :mod:`.backoff`)."""
    backoff_cap: float = DEFAULT_CAP
    """Longest reconnect delay."""
    handshake_timeout: float = 10.0
    """Seconds to open the WebSocket and be welcomed."""
    shutdown_grace: float = 10.0
    """Seconds running commands get to finish when the agent stops."""
    ping_interval: float | None = 20.0
    """WebSocket pings, so a dead path is noticed (``None``: none)."""
    hostname: str | None = None
    """The hostname sent in ``hello``; ``None``: the machine's."""
    platform: str | None = None
    """The platform sent in ``hello``; ``None``: the machine's."""
    tls: TLSFiles | None = None
    """The CA and client certificate for a wss:// daemon; ``None``: the enrolled ones."""
    max_frame_bytes: int = host.MAX_FRAME_BYTES
    """The largest message taken from the daemon (1009 past it)."""
    once: bool = False
    """Leave once every delivery pending for this agent ran and its result is committed
    (``tether-agent once``), instead of keeping the session for ever."""
    state_interval: float = DEFAULT_STATE_INTERVAL
    """Seconds between two state reports while a session is open (its configuration may
    say otherwise)."""


class AgentClient:
    """Serve ``agent``'s commands (plus the built-ins) for the identity in ``journal``.

    ``settings.tls``: the CA and client certificate for a wss:// daemon; ``None``, the ones
    the identity was enrolled with. They are loaded when :meth:`run` starts, which raises
    :class:`~tether.agent.tls.TLSFileError` for a bad one.

    ``run()`` returns after :meth:`stop` and a clean close (1000), raises
    :class:`~tether.protocol.errors.SessionClosed` after a close code in
    :data:`~tether.protocol.session.AGENT_FATAL`, and never returns otherwise. The journal
    is not closed by the client.
    """

    def __init__(self, journal: Journal, agent: Agent | None = None, settings: ClientSettings | None = None, *,
                 log: EventLog | None = None, rand: Callable[[], float] = random.random) -> None:
        settings = settings or ClientSettings()
        self.settings = settings
        self._journal = journal
        self.once = settings.once
        self.ran: list[Ran] = []
        """``once``: every run that ended in this process, in the order they ended."""
        self.done = False
        """``once``: everything was taken, run and reported; :meth:`run` returned for it."""
        self._drained = False
        """``once``: the daemon said the queue is pushed, and no task came after that."""
        self._check_scheduled = False
        self._max_frame_bytes = settings.max_frame_bytes
        self._tls_files = settings.tls
        self._ssl: ssl.SSLContext | None = None
        commands: dict[str, Command] = dict(BUILTINS.commands) if settings.builtins else {}
        if agent is not None:
            commands.update(agent.commands)  # the user's commands win over built-ins
        self._config_handlers = [] if agent is None else list(agent.config_handlers)
        self.commands = commands
        self._backoff_base = settings.backoff_base
        self._backoff_cap = settings.backoff_cap
        self._handshake_timeout = settings.handshake_timeout
        self._grace = settings.shutdown_grace
        self._ping_interval = settings.ping_interval
        self._hostname = settings.hostname if settings.hostname is not None else host.hostname()
        self._platform = settings.platform if settings.platform is not None else host.platform_name()
        self._rand = rand
        self._base_log = log or EventLog()
        self._log = self._base_log
        self._stopping = asyncio.Event()
        self._arrivals: list[Task] | None = None
        """The burst of tasks being read, to journal in the runner's next step."""
        self._last_prune = 0.0
        self._resend: asyncio.TimerHandle | None = None
        """A re-send of the outbox, due after the daemon's store refused a write (1503)."""
        self.sessions = 0
        """How many sessions were welcomed so far."""
        self._window = AgentWindow(0)
        """The session's window (its welcome's): how many pushed tasks may await an ack."""
        self._runner = Runner(commands, journal, concurrency=settings.concurrency, log=self._base_log)
        self._outflow = self._runner.outflow
        if self.once:
            self._runner.finished = self._ran
            self._runner.stepped = self._poke
        self.state_interval = settings.state_interval
        """Seconds between two state reports while a session is open (one goes when it opens)."""
        self._report_now = asyncio.Event()
        """Set to send a state report before the interval is over."""
        self.config: dict[str, Any] = {}
        """The configuration the agent runs with: what differs from the defaults."""
        self._config_error = ""
        """Why the last configuration pushed was not applied ("" if it was)."""
        self._configs: asyncio.Queue[Configure] = asyncio.Queue()
        """Configurations pushed, applied one at a time in order."""

    @property
    def connected(self) -> bool:
        """A session is open (welcomed) right now."""
        return self._outflow.is_open

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
            if self.once:
                self.ran.append(Ran(delivery_id, run, 0, "", ok=False, error=RESTARTED_WHILE_RUNNING))
        self._prune()
        saved = self._journal.config()
        if saved:  # what it ran with before it stopped, until tetherd says otherwise
            await self.configure(saved)
        self._runner.start()
        for priority, delivery_id, run in self._journal.pending():
            self._runner.submit(priority, delivery_id, run)
        try:
            await self._connect_loop(identity)
        except SessionClosed:
            await self._runner.stop(self._grace)
            raise
        except BaseException:
            await self._runner.abort()
            raise
        await self._runner.stop(self._grace)

    async def deliver_alerts(self, seconds: float) -> int:
        """One short session (at most ``seconds``) for ``tether-agent alert`` while no agent runs on this journal:
        send the journal's alerts, forget each as tetherd takes it, close. Tasks tetherd
        pushes meanwhile are left alone (not journaled nor acknowledged: pushed again to the
        agent's next session). Returns how many alerts are still kept; raises what
        connecting raises (OSError, a refusal as :class:`SessionClosed`)."""
        identity = self._journal.identity()
        if identity is None:
            raise NotEnrolledError()
        pending = {alert_id: frame for alert_id, frame in self._journal.alerts()}
        if not pending:
            return 0
        ssl_context = client_context(identity.server, identity.tls if self._tls_files is None else self._tls_files)
        async with asyncio.timeout(seconds), connect(
            identity.server, open_timeout=seconds, compression=None, max_size=self._max_frame_bytes,
            user_agent_header=host.USER_AGENT, ssl=ssl_context,
        ) as ws:
            session = self._hello_for(identity)
            await ws.send(session.opening())
            session.receive(await ws.recv())  # the welcome, or a refusal raised as SessionClosed
            for blob in pending.values():
                await ws.send(blob)
            while pending:
                for frame in session.receive(await ws.recv()):
                    if type(frame) is Alerted:
                        taken = [i for i in frame.ids if i in pending]
                    elif type(frame) is Error and frame.code == ErrorCode.INVALID_ALERT and frame.ref in pending:
                        self._log.warning("alert_refused", alert=frame.ref, code=frame.code, error=frame.message)
                        taken = [frame.ref]
                    elif type(frame) is Error and frame.code == ErrorCode.STORAGE_UNAVAILABLE:
                        self._log.warning("daemon_storage_unavailable", error=frame.message)
                        return len(pending)
                    else:
                        continue
                    self._journal.alerts_taken(taken)
                    for i in taken:
                        del pending[i]
            await ws.close(1000, "alerts delivered")
        return 0

    # -- connection loop ---------------------------------------------------------------

    async def _connect_loop(self, identity: Identity) -> None:
        attempt = 0
        while not self._stopping.is_set():
            identity = self._journal.identity() or identity  # a merge changes its id
            welcomed = self.sessions
            try:
                end = await self._session(identity)
            except (OSError, TimeoutError, InvalidHandshake) as exc:
                self._log.warning("connect_failed", server=identity.server, error=_describe(exc),
                                  hint=explain(exc, identity.server))
                if self.once:
                    raise OnceUnfinished(f"cannot reach {identity.server}: "
                                         f"{explain(exc, identity.server) or _describe(exc)}") from None
                end = None
            if self.sessions != welcomed:
                attempt = 0
            if end is not None and end.code in AGENT_FATAL:
                self._log.error("session_refused", code=end.code, reason=_reason(end), fatal=True, hint=end.hint)
                raise end
            if self._stopping.is_set():
                return
            if self.once and self.sessions == welcomed:
                # A run from cron or a timer gives up at once; the next one tries again.
                raise OnceUnfinished("no session: " + ("no answer to the hello in time" if end is None
                                                       else _reason(end)))
            delay = reconnect_delay(
                attempt, base=self._backoff_base, cap=self._backoff_cap, rand=self._rand,
                retry_after=None if end is None else end.retry_after,
            )
            attempt += 1
            self._log.info("reconnect_scheduled", code=None if end is None else end.code,
                           reason=None if end is None else _reason(end), attempt=attempt, delay=delay)
            try:
                async with asyncio.timeout(delay):
                    await self._stopping.wait()
            except TimeoutError:
                pass

    def _hello_for(self, identity: Identity) -> ClientSession:
        held = self._journal.holding()
        if len(held) > MAX_HOLDING:
            # The daemon may push one of the others again: the journal acknowledges it again
            # without running it.
            self._log.warning("holding_truncated", held=len(held), named=MAX_HOLDING)
        return ClientSession(agent_hello(
            token=identity.token, agent_id=identity.agent_id, hostname=self._hostname, platform=self._platform,
            machine_uuid=identity.machine_uuid, agent_version=tether.__version__, commands=self.commands,
            held=held, once=self.once,
        ), MSGPACK)

    async def _session(self, identity: Identity) -> SessionClosed | None:
        """One connection: the opening, then the session until it ends; how it ended
        (``None``: no answer to the hello in time)."""
        async with connect(
            identity.server,
            open_timeout=self._handshake_timeout,
            ping_interval=self._ping_interval,
            compression=None,  # small MessagePack frames; deflate costs ~100 KiB per session
            max_size=self._max_frame_bytes,
            user_agent_header=host.USER_AGENT,
            ssl=self._ssl,
        ) as ws:
            session = self._hello_for(identity)
            try:
                await ws.send(session.opening())
                try:
                    async with asyncio.timeout(self._handshake_timeout):
                        data = await ws.recv()
                except TimeoutError:
                    self._log.warning("handshake_timeout", seconds=self._handshake_timeout)
                    return None
                try:
                    [welcome] = session.receive(data)
                except SessionClosed as refused:
                    if not is_session_error(refused.code):  # no refusal: an answer that is not one
                        self._log.warning("handshake_failed", error=refused.message)
                    return refused
                assert isinstance(welcome, Welcome)
                if welcome.agent_id and welcome.agent_id != identity.agent_id:
                    # An admin merged this agent into another (tetherctl agent merge): it is that one now.
                    self._journal.adopt_agent_id(welcome.agent_id)
                    self._log.warning("agent_merged", old=identity.agent_id, agent_id=welcome.agent_id)
                    self._log = self._base_log.bind(agent_id=welcome.agent_id)
                    self._runner.log = self._log
                return await self._serve(ws, session, welcome)
            except ConnectionClosed as exc:
                return _closed(session, exc)

    async def _serve(self, ws: ClientConnection, session: ClientSession, welcome: Welcome) -> SessionClosed:
        """The open session: read frames until the connection closes."""
        if self.once and DRAINED not in session.features:
            await ws.close(1000, "agent stopping")
            raise OnceUnfinished("this tetherd does not tell an agent when its queue is pushed (the drained "
                                 "feature): upgrade tetherd to serve tether-agent once, or use tether-agent run")
        self.sessions += 1
        self._window = AgentWindow(welcome.window)
        self._arrivals = None
        self._drained = False
        # Snapshot the outbox and open the outflow in one step (no await between): a result
        # finished later goes through the outflow, one finished earlier is in the snapshot.
        alerts = self._journal.alerts()
        outbox = self._journal.outbox() + [frame for _, frame in alerts]
        self._runner.alerts_sent = alerts[-1][0] if alerts else 0
        self._outflow.open(outbox)
        batching = "batch" in session.features
        self._log.info("session_open", session=welcome.session_id, window=welcome.window, resent=len(outbox),
                       batch=batching)
        writer = asyncio.create_task(self._write(ws, batching=batching))
        closer = asyncio.create_task(self._close_when_stopping())
        children = [closer, writer]
        if "state" in session.features:  # a daemon that takes state reports (and configures)
            children += [asyncio.create_task(self._report_state()), asyncio.create_task(self._apply_configs())]
        try:
            end = await self._read(ws, session)
        finally:
            self._outflow.close()
            for child in children:
                child.cancel()
            await asyncio.wait(children)
        for child in children:
            if not child.cancelled() and child.exception() is not None:
                self._log.error("session_task_crashed", error=repr(child.exception()))
        if self._window.refused:
            self._log.warning("pushes_refused", count=self._window.refused, window=self._window.size)
        self._log.info("session_closed", code=end.code, reason=_reason(end))
        return end

    async def _read(self, ws: ClientConnection, session: ClientSession) -> SessionClosed:
        while True:
            try:
                data = await ws.recv()
            except ConnectionClosed as exc:
                return _closed(session, exc)
            for frame in session.receive(data):
                self._apply(frame)

    def _apply(self, frame: Frame | ProtocolError) -> None:
        """Act on one frame from the daemon, in order with those before it (see the module doc)."""
        if type(frame) is Task:
            self._take(frame)
        elif type(frame) is Cancel:
            self._arrivals = None  # tasks read after it are journaled after it
            self._runner.cancel(frame.delivery_id, frame.reason)
            self._poke()
        elif type(frame) is Drained:
            self._drained = True
            self._poke()
        elif type(frame) is Committed:
            self._arrivals = None
            self._runner.apply(functools.partial(self._confirm, run_refs(frame.delivery_ids, frame.runs)))
        elif type(frame) is Alerted:
            self._runner.apply(functools.partial(self._alerts_taken, frame.ids, None))
        elif type(frame) is Error:
            self._on_error(frame)
        elif type(frame) is Configure:
            self._configs.put_nowait(frame)
        elif isinstance(frame, ProtocolError):
            self._log.warning("bad_frame", code=int(frame.code), error=frame.message)
        else:
            self._log.warning("unexpected_frame", frame=type(frame).__name__)

    def _take(self, task: Task) -> None:
        if not self._window.admit():
            # The daemon may have at most `window` tasks unacknowledged: one more is not
            # journaled (nor acknowledged); a daemon that keeps its word re-pushes it later.
            if self._window.refused == 1:
                self._log.warning("push_refused", reason="beyond the window", window=self._window.size,
                                  delivery_id=task.delivery_id)
            return
        self._drained = False  # more came: wait for the next drained
        if self._arrivals is None:
            # Journal the tasks in the runner's next step, once the frames already
            # received are all read: a burst becomes one transaction and one ack.
            self._arrivals = []
            self._runner.write(functools.partial(self._accept, self._arrivals, self.sessions))
        self._arrivals.append(task)
        if task.poll_deadline:  # a later run of a polling sequence: get_schedule_metadata()
            self._runner.poll_sequence(task.delivery_id, task.poll_deadline - task.poll_timeout, task.poll_deadline)

    async def _write(self, ws: ClientConnection, *, batching: bool) -> None:
        """Send what the outflow gives, message by message; then close cleanly (1000)."""
        outflow = self._outflow
        while True:
            message = await outflow.next_message(batching)
            try:
                if message is None:
                    await ws.close(1000, "agent stopping")
                    return
                await ws.send(message[0] if len(message) == 1 else encode_batch(MSGPACK, message))
            except ConnectionClosed:
                return

    async def _report_state(self) -> None:
        """Report this machine's state now, then every ``state_interval`` (sooner when
        :attr:`_report_now` is set), until the session ends."""
        while True:
            self._report_now.clear()
            runner = self._runner
            facts = host.state(hostname=self._hostname, platform_name=self._platform, commands=self.commands,
                               tasks_run=runner.tasks_run, last_task=runner.last_task)
            self._outflow.put(MSGPACK.encode(StateReport(state=facts, config=self.config,
                                                         config_error=self._config_error)))
            try:
                async with asyncio.timeout(self.state_interval):
                    await self._report_now.wait()
            except TimeoutError:
                pass

    async def _apply_configs(self) -> None:
        """Apply each configuration pushed, in order (:meth:`configure`), then report the
        state with the configuration the agent now runs."""
        while True:
            frame = await self._configs.get()
            await self.configure(frame.settings)
            self._report_now.set()

    async def configure(self, settings: dict[str, Any]) -> bool:
        """Run with ``settings`` (what differs from the defaults): checked, given to the
        ``@agent.on_config`` handlers, then applied (``state_interval``, ``log_level``).
        False if it was refused (a bad key, a handler raised): the agent keeps the
        configuration it had, and its next state report says why."""
        try:
            checked = differences(check_settings(settings))
            whole = effective(checked)
            for handler in self._config_handlers:
                if inspect.iscoroutinefunction(handler):
                    await handler(dict(whole))
                else:
                    await asyncio.to_thread(handler, dict(whole))
        except ConfigError as exc:
            self._config_error = f"invalid configuration: {exc.message}"
        except Exception as exc:
            self._config_error = f"on_config handler failed: {type(exc).__name__}: {exc}"[:1024]
        else:
            if checked != self.config:
                self._journal.set_config(checked)
            self.config, self._config_error = checked, ""
            self.state_interval = whole["state_interval"]
            LOGGER.setLevel(whole["log_level"].upper())
            self._log.info("config_applied", hash=config_hash(checked)[:16], state_interval=self.state_interval,
                           log_level=whole["log_level"])
            return True
        self._log.warning("config_refused", error=self._config_error)
        return False

    async def _close_when_stopping(self) -> None:
        await self._stopping.wait()
        await self._runner.stop(self._grace)  # results of running commands go out first
        self._outflow.end()

    # -- journal writes for the daemon's frames (the runner's step) --------------------

    def _accept(self, tasks: list[Task], session: int) -> Intake:
        """Journal a burst of tasks; acknowledge it once that is committed."""
        if self._arrivals is tasks:
            self._arrivals = None  # the frames read from now on are the next burst
        accepted = self._journal.accept(tasks)
        acks = []
        for chunk in chunked(accepted.ack, MAX_IDS):  # an ack names at most MAX_IDS
            ids, runs = split_refs(chunk)
            acks.append(MSGPACK.encode(Ack(delivery_ids=ids, runs=runs)))
        return Intake(accepted.new, accepted.fresh, acks=acks, resend=accepted.resend,
                      then=functools.partial(self._accepted, accepted, len(tasks), session))

    def _accepted(self, accepted: Accepted, tasks: int, session: int) -> None:
        if session == self.sessions:  # the burst's tasks leave the window (acknowledged or ignored)
            self._window.acknowledged(tasks)
        self._log.info("tasks_received", new=len(accepted.new), duplicate=accepted.duplicates, resent=len(accepted.resend))

    def _confirm(self, refs: list[Ref]) -> Intake:
        self._journal.confirm(refs)
        return Intake(then=functools.partial(self._confirmed, len(refs)))

    def _confirmed(self, count: int) -> None:
        self._log.debug("results_committed", count=count)
        self._prune()
        self._poke()

    def _refuse(self, frame: Error) -> Intake:
        assert frame.ref is not None
        return Intake(then=functools.partial(self._refused, frame, self._journal.refuse(frame.ref)))

    def _refused(self, frame: Error, dropped: int) -> None:
        if dropped:
            self._log.warning("result_refused", delivery_id=frame.ref, results=dropped, code=frame.code,
                              error=frame.message)
        else:
            self._log.warning("daemon_error", code=frame.code, name=frame.name, ref=frame.ref, error=frame.message)
        self._poke()

    def _on_error(self, frame: Error) -> None:
        if frame.code == ErrorCode.STORAGE_UNAVAILABLE:
            # The daemon could not store a report (disk full, database locked): the results
            # are still in the outbox; send them again once it has had time to recover.
            self._log.warning("daemon_storage_unavailable", error=frame.message, retry_after=frame.retry_after)
            if self._resend is None:
                self._resend = asyncio.get_running_loop().call_later(
                    frame.retry_after or STORAGE_RETRY, self._resend_outbox)
        elif frame.ref is not None and frame.code == ErrorCode.INVALID_ALERT:
            self._runner.apply(functools.partial(self._alerts_taken, [frame.ref], frame))
        elif frame.ref is not None and frame.code in REFUSED_RESULT_CODES:
            self._arrivals = None
            self._runner.apply(functools.partial(self._refuse, frame))
        elif is_session_error(frame.code):
            self._log.warning("session_error", code=frame.code, name=frame.name, error=frame.message)
        else:
            self._log.warning("daemon_error", code=frame.code, name=frame.name, ref=frame.ref, error=frame.message)

    def send_new_alerts(self) -> None:
        """Send the alerts journaled by another process (``tether-agent alert``, which
        signals this one with SIGUSR1) since the last ones sent; the next session sends
        them if none is open."""
        if not self._outflow.is_open:
            return
        fresh = self._journal.alerts(after=self._runner.alerts_sent)
        for alert_id, frame in fresh:
            self._outflow.put(frame)
            self._runner.alerts_sent = alert_id
        if fresh:
            self._log.info("alerts_sent", count=len(fresh))

    def _alerts_taken(self, ids: list[int], refusal: Error | None) -> Intake:
        """tetherd took these alerts (or refused one for good): the journal forgets them."""
        self._journal.alerts_taken(ids)
        if refusal is not None:
            self._log.warning("alert_refused", alert=refusal.ref, code=refusal.code, error=refusal.message)
        return NOTHING

    # -- once: leave when everything is done --------------------------------------------

    def _ran(self, claimed: Claimed, result: Result) -> None:
        self.ran.append(Ran(claimed.delivery_id, claimed.run, claimed.task_id, claimed.command, result.ok,
                            result.error))

    def _poke(self) -> None:
        """Something that may end a ``once`` happened: look, after the frames and journal
        writes already due (a task read with a ``drained`` is journaled first)."""
        if self.once and self._drained and not self._check_scheduled:
            self._check_scheduled = True
            asyncio.get_running_loop().call_soon(self._check_done)

    def _check_done(self) -> None:
        self._check_scheduled = False
        if self.done or not self._drained or not self.connected or self._arrivals is not None or self._runner.busy:
            return
        counts = self._journal.counts()
        if counts[RunState.PENDING] or counts[RunState.RUNNING] or counts["outbox"]:
            return
        self.done = True
        self._log.info("once_done", ran=len(self.ran), failed=sum(not r.ok for r in self.ran))
        self.stop()

    def _resend_outbox(self) -> None:
        self._resend = None
        if not self._outflow.is_open:
            return  # no session: the next one sends the outbox first anyway
        outbox = self._journal.outbox() + [frame for _, frame in self._journal.alerts()]
        for blob in outbox:
            self._outflow.put(blob)
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


def _closed(session: ClientSession, exc: ConnectionClosed) -> SessionClosed:
    """What the end of the connection meant to ``session`` (the close frame it got, if any)."""
    if exc.rcvd is None:
        return session.closed(None)
    return session.closed(exc.rcvd.code, exc.rcvd.reason)


def _reason(end: SessionClosed) -> str:
    return f"{end.name}: {end.message}"


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
