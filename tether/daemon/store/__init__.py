"""The store: everything tetherd knows, behind one protocol.

The daemon speaks to :class:`Store` only; SQL lives in :mod:`.sqlite` (and a future
PostgreSQL backend slots in behind the same protocol); :mod:`.memory` keeps it all in
dicts, for tests. Promises every backend keeps (``tests/daemon/store`` checks them on each):

* a write is visible to readers, and its awaitable resolves, only after it is committed;
* writes are applied in the order they were submitted (one writer, group commits), so the
  order of state changes in the store is the order of frames on the wire;
* every delivery and task state change is decided by :mod:`tether.protocol.lifecycle`; a
  store only applies the decisions;
* every write answers one :class:`~tether.daemon.effects.Effects` (what the daemon must do
  now that it is committed; its answer in ``result``), but two that nobody waits for
  (``agent_seen``, ``mark_sent``: a hello's facts, and ``sent`` marks, which nothing
  watches);
* a write refused by its own rules raises :class:`~tether.protocol.errors.ProtocolError`
  and changes nothing; one the store cannot do raises :class:`StoreError`.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal, NamedTuple, Protocol

import msgspec

from ...protocol.agent_state import AgentState
from ...protocol.alerts import AlertBody, AlertList, AlertView
from ...protocol.console import (
    AgentConfigView,
    AgentDetail,
    AgentView,
    ConfigLayerView,
    DeliveryRow,
    DriftRow,
    KeyView,
    ScheduleView,
    TaskView,
    TokenView,
)
from ...protocol.lifecycle import WaitPlan
from ..effects import Effects, PushItem, Ref
from .hook_records import HookStore

MAX_STATE_CHANGES = 1000
"""State changes kept per agent, the newest: an agent whose facts change on every report
cannot grow the store without bound."""


class ConfigTarget(NamedTuple):
    """A configuration layer: a tag's or an agent's."""

    scope: Literal["tag", "agent"]
    name: str


class StateRecorded(msgspec.Struct, frozen=True, kw_only=True):
    """What a state report changed, and how the agent's configuration stands."""

    changed: list[str] = []
    """The tracked facts that changed (:func:`~tether.protocol.agent_state.changes`)."""
    desired: dict[str, Any] = {}
    """The agent's desired configuration (what differs from the defaults)."""
    desired_hash: str = ""
    reported_hash: str = ""

    @property
    def drifted(self) -> bool:
        return self.desired_hash != self.reported_hash


class StoreError(Exception):
    """The store cannot do what was asked (not a bug in the caller): refused with 1503."""


class Untasked(NamedTuple):
    """What an untask changed: how many deliveries it ended, and how many tasks it closed
    (they reach no new agent: a tag or selector task, a task and its polling sequels)."""

    cancelled: int
    tasks: int


class ResultIn(msgspec.Struct, frozen=True, kw_only=True):
    delivery_id: int
    ok: bool
    output: bytes
    error: str = ""
    started_at: float = 0.0
    finished_at: float = 0.0
    run: int = 1
    plan: WaitPlan | None = None
    """Set when the run asked to be run again (then ``output`` is its partial result)."""
    sequels: list[tuple[WaitPlan, bytes]] = []
    """Further polling sequences the run starts, with their partial results."""


class AlertIn(msgspec.Struct, frozen=True, kw_only=True):
    """An agent's alert as the store takes it: checked, its checksum computed."""

    checksum: bytes
    body: AlertBody
    raised_at: float = 0.0
    delivery_id: int | None = None


class AlertRecorded(msgspec.Struct, frozen=True, kw_only=True):
    """What recording one copy of an alert did: ``new`` the first copy of a distinct alert
    (hooks' ``alert`` trigger fires on those), else a repeat, counted."""

    alert_id: int
    agent_id: str
    new: bool
    count: int
    kind: str
    name: str
    severity: str


class NewTask(msgspec.Struct, frozen=True, kw_only=True):
    command: str
    args: dict[str, Any]
    target_kind: str
    """``agent``, ``tag`` or ``all``."""
    target: str
    priority: int
    ttl: int
    hide_polling_output: bool = False
    schedule_id: int | None = None
    selector: str | None = None
    """With target_kind ``all``: only the agents this LimaCharlie selector matches."""
    investigation_id: str = ""
    delay: float = 0.0
    """Seconds after its creation before the task is pushed to any agent."""
    jitter: float = 0.0
    """Up to this many seconds more, drawn for each agent (so a fleet is not tasked at once)."""


class NewSchedule(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    command: str
    """The command line as the operator gave it (shown back by ``schedule show``)."""
    task: NewTask
    """The task each firing creates."""
    every: float | None
    cron: str | None
    timezone: str
    missed: str


class Timing(msgspec.Struct, frozen=True, kw_only=True):
    """When a schedule fires: every ``every`` seconds from ``anchor``, or at ``cron`` times."""

    every: float | None
    cron: str | None
    timezone: str
    anchor: float


class Calendar(Protocol):
    """When schedules fire (``daemon/schedules.py``): handed to the store's schedule writes,
    so that the store keeps no calendar of its own."""

    def next_fire(self, timing: Timing, after: float) -> float:
        """The first firing strictly after ``after`` (``inf``: none ever)."""
    def missed_between(self, timing: Timing, due: float, now: float) -> int:
        """Firings from ``due`` to ``now``, both included."""


class StoreStats(msgspec.Struct, frozen=True, kw_only=True):
    """Counters for /metrics."""

    entered: dict[str, int] = {}
    """Committed delivery state changes, by the state entered."""
    commits: int = 0
    commit_ops: int = 0
    commit_seconds: float = 0.0
    last_commit_seconds: float = 0.0


class Enrollment(msgspec.Struct, frozen=True, kw_only=True):
    agent_id: str
    token: str
    tags: list[str]
    status: Literal["new", "existing"] = "new"
    """``existing``: the enrollee proved it is this agent (same id, token and tags)."""
    clone_of: str = ""
    """A new agent enrolled from the machine UUID of this one: a possible clone."""
    replaces: str = ""
    """The agent this new one replaces (it proved it was that one, from another machine UUID)."""


class AgentAuth(msgspec.Struct, frozen=True):
    agent_id: str
    """The agent the session is: another than the hello's if that one was merged into it."""
    certificate: bytes | None = None
    """The SHA-256 of the client certificate the agent is bound to (``bind_client_certificates``)."""


class Store(HookStore, Protocol):
    """Everything the daemon persists (hooks: :class:`.hook_records.HookStore`). See the module docstring."""

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def flush(self) -> None:
        """Wait until every write submitted so far is committed."""
    def stats(self) -> StoreStats: ...

    # credentials
    async def bootstrap(self, now: float, *, key_uses: int | None = None,
                        key_expires_at: float | None = None) -> Effects[tuple[str, str] | None]:
        """On an empty store, make the first admin token and enrollment key (bounded by
        ``key_uses`` / ``key_expires_at`` if given); else None."""
    async def admin_login(self, token: str) -> tuple[int, str] | None:
        """The id and role of an admin token that is not revoked."""
    async def create_token(self, role: str, label: str, now: float) -> Effects[TokenView]: ...
    async def list_tokens(self) -> list[TokenView]: ...
    async def revoke_token(self, token_id: int, now: float) -> Effects[bool]:
        """False if it was revoked already; refuses to revoke the last admin token."""
    async def create_key(self, tags: list[str], expires_at: float | None, uses: int | None,
                         now: float, *, allow_requested_tags: bool = False) -> Effects[KeyView]: ...
    async def list_keys(self) -> list[KeyView]: ...
    async def revoke_key(self, key_id: int, now: float) -> Effects[bool]: ...
    async def revoke_agent(self, agent_id: str) -> Effects[bool]:
        """The agent's token stops working; False if it was revoked already."""
    async def enroll(
        self, key: str, machine_uuid: str, hostname: str, platform: str, tags: list[str], now: float,
        *, proof: tuple[str, str] | None = None, certificate: bytes | None = None,
    ) -> Effects[Enrollment]:
        """Rules: :mod:`tether.protocol.enrollment`. ``proof``: ``(agent_id, token)``.
        ``certificate``: the SHA-256 of the client certificate to bind the agent to. The
        new agent gets the active tasks aimed at its tags, all agents or a selector it matches."""
    async def authenticate_agent(self, agent_id: str, token: str) -> AgentAuth | None: ...
    async def bind_certificate(self, agent_id: str, certificate: bytes) -> Effects[bool]:
        """Bind an agent bound to no certificate yet to this one (its SHA-256); False if
        it is bound already."""
    async def approve_agent(self, agent_id: str) -> Effects[None]:
        """A possible clone becomes an agent of its own (its mark is cleared)."""
    async def remove_agent(self, agent_id: str, now: float) -> Effects[None]:
        """Token void, unfinished deliveries cancelled, out of every target and listing."""
    async def merge_agent(self, clone_id: str, now: float) -> Effects[str]:
        """The possible clone takes over the identity of the agent it is a clone of (whose
        id is the result); the clone's unfinished deliveries are cancelled."""
    def agent_seen(
        self, agent_id: str, hostname: str, platform: str, commands: list[str], version: str, now: float
    ) -> None:
        """Record the facts from an agent's hello (fire and forget)."""

    # what agents report about themselves, and their configuration
    def record_state(self, agent_id: str, state: AgentState, now: float, config: dict[str, Any] | None = None,
                     config_error: str = "") -> asyncio.Future[Effects[StateRecorded]]:
        """An agent's state report: kept as its latest; each tracked fact that changed from
        the report before writes one history row (:func:`~tether.protocol.agent_state.changes`;
        a first report none), and only the newest :data:`MAX_STATE_CHANGES` rows of an agent
        are kept. Its hostname and platform become the agent's (what selectors evaluate).
        ``config`` (checked; None: the agent reports none): the configuration it runs, stored
        once per distinct content (by its hash) and named by the agent. The result says
        which facts changed and the agent's desired and reported configuration hashes."""
    async def config_set(self, target: ConfigTarget, settings: dict[str, Any], unset: list[str],
                         now: float) -> Effects[ConfigLayerView]:
        """Set (checked) and remove keys of a tag's or an agent's layer, refused whole if
        the agent is unknown or the layer would hold more than
        :data:`~tether.protocol.agent_config.MAX_KEYS` keys; ``configures``: every agent it
        reaches, with its desired configuration now."""
    async def agent_config(self, agent_id: str) -> AgentConfigView | None:
        """An agent's desired and reported configuration; None if no agent has this id."""
    async def config_drift(self) -> list[DriftRow]:
        """The live agents whose reported configuration hash is not their desired one (or
        who never reported one while their desired one is not the empty one)."""
    async def get_agent(self, agent_id: str, *, changes: int = 20) -> AgentDetail | None:
        """An agent (removed or merged ones too), its latest state and its ``changes`` newest
        state changes, newest first; None if no agent ever had this id."""

    # tasks and deliveries
    async def create_task(self, task: NewTask, now: float) -> Effects[int]:
        """The task (its id the result) and its deliveries to the agents it targets now."""
    async def pending_for_agent(
        self, agent_id: str, *, limit: int | None = None, after: PushItem | None = None
    ) -> list[PushItem]:
        """The agent's deliveries to push, in push order (priority, highest first, then
        oldest task): at most ``limit``, and only those after ``after`` in that order."""
    def mark_sent(self, delivery_ids: list[int], now: float) -> None:
        """queued -> sent, in submission order (fire and forget)."""
    # Agent reports arrive at frame rate, timers fire by the thousand: these return the
    # write's future directly, so the caller reacts on commit (a callback) without a task each.
    def acknowledge(self, agent_id: str, refs: list[Ref], now: float,
                    sent_at: dict[int, float] | None = None) -> asyncio.Future[Effects[None]]:
        """``queued | sent -> acked``; ``sent_at`` gives the push time of runs never marked sent."""
    def started(self, agent_id: str, ref: Ref, message: str, now: float) -> asyncio.Future[Effects[None]]: ...
    def started_many(self, agent_id: str, reports: list[tuple[Ref, str]],
                     now: float) -> asyncio.Future[Effects[None]]: ...
    def record_results(self, agent_id: str, results: list[ResultIn], now: float,
                       acked: dict[int, float] | None = None) -> asyncio.Future[Effects[None]]:
        """A run's result ends its delivery (done, failed) or, with a plan, makes it wait for
        its next run (history entry written, its polling timer set).
        ``acked``: deliveries whose ack of that same run came with the result, with when
        each was pushed: the result's write also records the ack (``acked_at``, and
        ``sent_at`` for one never marked sent), instead of a write of its own before."""
    def expire_task(self, task_id: int, now: float) -> asyncio.Future[Effects[None]]:
        """The task's ttl ended: it reaches no new agent; runs not acknowledged and waits
        for a next run end as expired."""
    def poll_due(self, delivery_id: int, now: float) -> asyncio.Future[Effects[None]]:
        """A polling timer fired: queue the next run if it is due, or end the sequence at its
        timeout (the daemon's own error entry), or at the ttl."""
    async def cancel(
        self, *, task_id: int | None = None, agent_id: str | None = None, tag: str | None = None,
        selector: str | None = None, now: float,
    ) -> Effects[Untasked]:
        """Untask: the task's unfinished deliveries (all, or only those of the agents the other
        argument names), or everything unfinished for an agent, a tag or a selector."""
    async def tag_add(self, agent_id: str, tag: str, now: float) -> Effects[None]: ...
    async def tag_rm(self, agent_id: str, tag: str, now: float) -> Effects[None]:
        """Remove the tag; the agent gets the selector tasks it matches without it."""
    def select_for_agent(self, agent_id: str, hostname: str, platform: str,
                         now: float) -> asyncio.Future[Effects[None]]:
        """An agent's facts from its hello: the active selector tasks it now matches and had
        not received, queued (called only while selector tasks may be active)."""

    # alerts
    def record_alerts(self, agent_id: str, alerts: list[AlertIn], dropped: int,
                      now: float) -> asyncio.Future[Effects[list[AlertRecorded]]]:
        """One copy of each alert: a new checksum is a new row (count 1), a known one is
        counted and its latest copy kept, in order. ``dropped``: alerts of the agent not
        stored (over its rate limit), added to its count of those."""
    async def list_alerts(self, *, agent_id: str | None, kind: str | None, since: float | None,
                          limit: int) -> AlertList:
        """The distinct alerts, last seen first (and the agents' dropped counts)."""
    async def get_alert(self, alert_id: int) -> AlertView | None: ...
    async def ack_alert(self, alert_id: int, now: float) -> Effects[AlertView]:
        """Acknowledge it (when, and its count then); UNKNOWN_ALERT if there is none."""

    # reads
    async def list_agents(self, tag: str | None, *, removed: bool = False) -> list[AgentView]:
        """``removed``: also the agents removed or merged into another."""
    async def ended_by_daemon(self, agent_id: str, delivery_ids: list[int]) -> list[tuple[int, str]]:
        """Of these deliveries of the agent, those the daemon ended (untask, ttl, polling
        timeout), with their state: an agent reconnecting with them held must cancel them."""
    async def agent_commands(self, agent_id: str) -> list[str] | None:
        """The commands the agent announced, [] if it never connected, None if unknown."""
    async def get_task(self, task_id: int, *, history: bool = False, now: float | None = None) -> TaskView | None:
        """``now``: a task whose ttl ended by then is shown ``closed`` (a task for one agent
        whose delivery ended is not marked closed when its ttl passes: it holds no timer)."""
    async def list_deliveries(
        self, *, agent_id: str | None, tag: str | None, states: list[str] | None, limit: int,
        selector: str | None = None,
    ) -> list[DeliveryRow]: ...
    async def timers(self) -> Effects[None]:
        """What the timer wheel must hold (and the selector tasks still active), to rebuild
        it at start: every pending ttl, polling wait and schedule firing."""

    # recurring schedules
    async def add_schedule(self, spec: NewSchedule, now: float, next_fire_at: float) -> Effects[ScheduleView]: ...
    async def list_schedules(self) -> list[ScheduleView]: ...
    async def get_schedule(self, name: str) -> ScheduleView | None: ...
    async def pause_schedule(self, name: str, paused: bool, now: float,
                             calendar: Calendar) -> Effects[ScheduleView]:
        """Pause (no firings, next_fire_at None) or resume (next firing after ``now``)."""
    async def remove_schedule(self, name: str) -> Effects[None]:
        """Delete the schedule (its tasks stay)."""
    def fire_schedule(self, schedule_id: int, now: float, calendar: Calendar) -> asyncio.Future[Effects[int | None]]:
        """Create the schedule's task (its id the result; None if it was not due) and move
        its next firing on."""
    async def skip_missed(self, now: float, calendar: Calendar) -> Effects[list[tuple[str, int]]]:
        """At start: schedules whose firings fell due while tetherd was down. ``skip`` ones
        move to their next firing after ``now``; ``once`` ones stay due (they fire once at
        start). Both count the firings missed; the result is (name, missed) of each."""
