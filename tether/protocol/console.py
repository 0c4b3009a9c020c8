"""Console RPC: the methods a ``console`` session may call, their params and results.

A console sends ``req(id, method, params)``; the daemon answers ``res(id, result)`` or
``error(ref=id)``. Params are validated against the Structs below (unknown keys are
rejected by name, so a typo never silently does something else); results are the
``*View`` Structs, encoded as JSON objects.
"""

from __future__ import annotations

from typing import Any, Literal, TypeAlias

import msgspec

from .agent_config import MAX_KEYS, check_key, check_settings
from .agent_state import AgentState
from .errors import ErrorCode, ProtocolError
from .lifecycle import DeliveryState, listed
from .polling import MAX_SECONDS
from .selectors import parse as parse_selector
from .tags import check_tag, check_tags

DEFAULT_TTL = 604_800
"""One week, as in LimaCharlie's reliable tasking."""
MAX_TTL = 10 * 365 * 86_400
PRIORITIES = {"low": 0, "medium": 1, "high": 2, "urgent": 3}
"""Armadito's job priorities."""
PRIORITY_NAMES = {v: k for k, v in PRIORITIES.items()}


class Params(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    def check(self) -> None:
        """Cross-field checks msgspec's types cannot say; raise INVALID_PARAMS."""


def _bad(message: str) -> ProtocolError:
    return ProtocolError(ErrorCode.INVALID_PARAMS, message)


def _one_target(agent: str | None, tag: str | None, all_: bool, *, required: bool, selector: str | None = None) -> None:
    if tag is not None:
        check_tag(tag)
    given = sum((agent is not None, tag is not None, bool(all_), selector is not None))
    if given > 1:
        raise _bad("give only one target: agent, tag, selector or all")
    if required and given == 0:
        raise _bad("give a target: agent, tag, selector or all")
    if selector is not None:
        parse_selector(selector)  # refused here, with the column, not at the first agent it meets


MAX_INVESTIGATION_ID = 256

class AgentsList(Params):
    tag: str | None = None
    online: bool = False
    """Only the agents with an open session."""
    offline: bool = False
    """Only the agents without one."""
    stale: float | None = None
    """Only the agents offline and not seen for at least this many seconds (or never)."""
    all: bool = False
    """Also the agents revoked (``agent.revoke``), replaced by a new agent from another machine
    UUID, removed (``agent.rm``) or merged into another (``agent.merge``)."""

    def check(self) -> None:
        _one_target(None, self.tag, False, required=False)
        if self.online and (self.offline or self.stale is not None):
            raise _bad("give online, or offline / stale, not both")
        if self.stale is not None and not 0 <= self.stale <= MAX_TTL:
            raise _bad(f"stale must be between 0 and {MAX_TTL} seconds, not {self.stale}")


class TagChange(Params):
    agent_id: str
    tag: str

    def check(self) -> None:
        check_tag(self.tag)


class TagRemove(TagChange):
    """``tag.rm`` takes any tag an agent carries, also one made before the tag rule
    (:mod:`.tags`) existed, so such a tag can be cleaned up."""

    def check(self) -> None:
        if not self.tag:
            raise _bad("tag is empty")


class TaskCreate(Params):
    command: str
    """A command name, or a whole command line (``"file_get --path /etc/hosts"``)."""
    args: dict[str, Any] = {}
    """Merged over the args parsed from the command line."""
    agent: str | None = None
    tag: str | None = None
    all: bool = False
    ttl: int = DEFAULT_TTL
    priority: int = 1
    hide_polling_output: bool = False
    """Accepted for older consoles: hiding is the default now (XSOAR's)."""
    show_polling_output: bool = False
    """Polling (XSOAR): show in the history the scheduled entries after the first that carry
    no partial result (by default they are left out, and counted)."""
    selector: str | None = None
    """A LimaCharlie sensor selector (``tether.protocol.selectors``): every agent it matches,
    now or until the ttl ends."""
    investigation_id: str = ""
    """LimaCharlie's ``context`` / ``inv_id``: kept with the task and shown with its results."""
    delay: float = 0.0
    """Seconds after the task is created before it is pushed to any agent."""
    jitter: float = 0.0
    """Up to this many seconds more, drawn for each agent, so that a fleet is not tasked at once."""

    def check(self) -> None:
        _one_target(self.agent, self.tag, self.all, required=True, selector=self.selector)
        if self.hide_polling_output and self.show_polling_output:
            raise _bad("give show_polling_output or hide_polling_output, not both")
        if len(self.investigation_id) > MAX_INVESTIGATION_ID:
            raise _bad(f"investigation_id is longer than {MAX_INVESTIGATION_ID} characters")
        if not 1 <= self.ttl <= MAX_TTL:
            raise _bad(f"ttl must be between 1 and {MAX_TTL} seconds, not {self.ttl}")
        if self.priority not in PRIORITY_NAMES:
            raise _bad(f"priority must be 0-3 (low, medium, high, urgent), not {self.priority}")
        if not self.command.strip():
            raise _bad("command is empty")
        for name, seconds in (("delay", self.delay), ("jitter", self.jitter)):
            if not 0 <= seconds <= MAX_TTL:
                raise _bad(f"{name} must be between 0 and {MAX_TTL} seconds, not {seconds}")
        if self.delay + self.jitter >= self.ttl:
            raise _bad(f"delay + jitter ({self.delay + self.jitter:g} s) must be less than the ttl ({self.ttl} s): "
                       "the ttl still bounds a delayed task, so it would expire before it is due; raise the ttl")


class TaskList(Params):
    agent: str | None = None
    tag: str | None = None
    selector: str | None = None
    """Deliveries of the agents the selector matches now."""
    state: str | None = None
    """A delivery state, ``pending`` (the default: not yet finished) or ``all``."""
    limit: int = 1000

    def check(self) -> None:
        _one_target(self.agent, self.tag, False, required=False, selector=self.selector)
        if not 1 <= self.limit <= 100_000:
            raise _bad("limit must be between 1 and 100000")
        self.states()

    def states(self) -> list[str] | None:
        """The delivery states asked for; None for all of them."""
        states = listed(self.state)
        return None if states == frozenset(DeliveryState) else sorted(s.value for s in states)


class TaskGet(Params):
    task_id: int
    history: bool = False
    """Include each delivery's history: one entry per run (polling) and the final one."""


class TaskWait(Params):
    task_id: int
    timeout: float | None = None

    def check(self) -> None:
        if self.timeout is not None and self.timeout < 0:
            raise _bad("timeout must not be negative")


class TaskCancel(Params):
    """Untask: one task, or everything pending for an agent, a tag or a selector; or one
    task for those agents only (``task_id`` with one of them: LimaCharlie's reliable delete
    sends ``sid`` and ``task_id``)."""

    task_id: int | None = None
    agent: str | None = None
    tag: str | None = None
    selector: str | None = None

    def check(self) -> None:
        given = sum(x is not None for x in (self.agent, self.tag, self.selector))
        if self.tag is not None:
            check_tag(self.tag)
        if given > 1 or (given == 0 and self.task_id is None):
            raise _bad("give task_id, or one of agent, tag or selector, or task_id with one of them")
        if self.selector is not None:
            parse_selector(self.selector)


SCHEDULE_NAME_MAX = 128


def _check_name(name: str) -> None:
    if not name or len(name) > SCHEDULE_NAME_MAX or any(c.isspace() for c in name):
        raise _bad(f"invalid schedule name {name!r}: 1-{SCHEDULE_NAME_MAX} characters, no spaces")


class ScheduleAdd(Params):
    """A recurring schedule: every ``every`` seconds, or at the times of a ``cron`` expression,
    create an ordinary task from these fields."""

    name: str
    """Unique and case-sensitive (Check Point SmartTasks' rule for names)."""
    command: str
    args: dict[str, Any] = {}
    agent: str | None = None
    tag: str | None = None
    all: bool = False
    every: float | None = None
    """Seconds between firings; the first is one period after the schedule is added."""
    cron: str | None = None
    """A five-field cron expression, e.g. ``*/5 * * * *``, read in ``timezone``."""
    timezone: str = "UTC"
    ttl: int = DEFAULT_TTL
    priority: int = 1
    hide_polling_output: bool = False
    show_polling_output: bool = False
    missed: Literal["once", "skip"] = "once"
    """Firings that fell due while tetherd was down: run once at start, or skip them."""

    def check(self) -> None:
        _check_name(self.name)
        TaskCreate(command=self.command, args=self.args, agent=self.agent, tag=self.tag, all=self.all,
                   ttl=self.ttl, priority=self.priority, hide_polling_output=self.hide_polling_output,
                   show_polling_output=self.show_polling_output).check()
        if (self.every is None) == (self.cron is None):
            raise _bad("give exactly one of every (seconds) or cron (an expression)")
        if self.every is not None and not 0 < self.every <= MAX_SECONDS:
            raise _bad(f"every must be more than 0 and at most {MAX_SECONDS:g} seconds, not {self.every:g}")
        if self.cron is not None and not self.cron.strip():
            raise _bad("cron is empty")


class ScheduleName(Params):
    name: str

    def check(self) -> None:
        _check_name(self.name)


class ScheduleList(Params):
    pass


class Nothing(Params):
    """A method that takes no params."""


LABEL_MAX = 200

Role: TypeAlias = Literal["viewer", "operator", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "operator", "admin")
"""Admin token roles, each allowed what the one before it is, and more."""


class TokenCreate(Params):
    """A new admin token for tetherctl; its clear value is in the answer and nowhere else."""

    role: Role = "operator"
    label: str = ""
    """Whose token this is (shown by ``token.list``)."""

    def check(self) -> None:
        if len(self.label) > LABEL_MAX:
            raise _bad(f"label is longer than {LABEL_MAX} characters")


class TokenId(Params):
    token_id: int


class KeyCreate(Params):
    """A new enrollment key; agents enrolling with it get its tags."""

    tags: list[str] = []
    allow_requested_tags: bool = False
    """Agents enrolling with it may ask for tags beyond ``tags`` (else such an enrollment
    is refused, 4014)."""
    expires_in: float | None = None
    """Seconds until it expires (None: never)."""
    uses: int | None = None
    """How many enrollments it allows (None: unlimited)."""

    def check(self) -> None:
        check_tags(self.tags)
        if self.expires_in is not None and not 0 < self.expires_in <= MAX_TTL:
            raise _bad(f"expires_in must be more than 0 and at most {MAX_TTL} seconds")
        if self.uses is not None and not 1 <= self.uses <= 1_000_000_000:
            raise _bad("uses must be a whole number from 1 to 1000000000")


class KeyId(Params):
    key_id: int


class AgentRevoke(Params):
    agent_id: str


class AgentId(Params):
    """``agent.approve``, ``agent.merge``, ``agent.rm``: the agent they act on."""

    agent_id: str


MAX_STATE_CHANGES_SHOWN = 1000


class AgentShow(Params):
    """``agent.get``: one agent, its latest state and its newest state changes."""

    agent_id: str
    changes: int = 20
    """How many of its newest state changes to show."""

    def check(self) -> None:
        if not 0 <= self.changes <= MAX_STATE_CHANGES_SHOWN:
            raise _bad(f"changes must be between 0 and {MAX_STATE_CHANGES_SHOWN}, not {self.changes}")


class ConfigChange(Params):
    """``config.set`` / ``config.unset``: the layer of one tag or of one agent."""

    tag: str | None = None
    agent: str | None = None

    def check(self) -> None:
        if (self.tag is None) == (self.agent is None):
            raise _bad("give one of tag or agent")
        if self.tag is not None:
            check_tag(self.tag)


class ConfigSet(ConfigChange, kw_only=True):
    settings: dict[str, Any]
    """Keys and values (:mod:`.agent_config`): each checked here, so nothing invalid is stored."""

    def check(self) -> None:
        super().check()
        if not self.settings:
            raise _bad("give at least one key=value to set")
        self.settings = check_settings(self.settings)


class ConfigUnset(ConfigChange, kw_only=True):
    keys: list[str]

    def check(self) -> None:
        super().check()
        if not self.keys or len(self.keys) > MAX_KEYS:
            raise _bad(f"give 1 to {MAX_KEYS} keys to unset")
        for key in self.keys:
            check_key(key)


# -- results ------------------------------------------------------------------------------


class View(msgspec.Struct, kw_only=True):
    pass


class AgentView(View):
    agent_id: str
    hostname: str
    platform: str
    tags: list[str]
    online: bool
    enrolled_at: float
    last_seen: float | None
    commands: list[str]
    revoked: bool = False
    """Its token was revoked (``agent.revoke``): it cannot log in or re-enroll as itself."""
    clone_of: str | None = None
    """A possible clone: enrolled without proof from the machine UUID of this agent (an
    admin approves it, merges it into that agent, or removes it)."""
    removed_at: float | None = None
    """Removed (``agent.rm``) or merged into another agent; listed only with ``all``."""
    merged_into: str | None = None
    """The agent it was merged into (``agent.merge``): that agent now has its token."""
    replaced_by: str | None = None
    """The new agent that replaced it: the same state directory enrolled again from another
    machine UUID (re-imaged, cloned). Its token is void; it is kept (with its deliveries)
    until an admin removes it (``agent.rm``), and listed only with ``all``."""


class TaskCreated(View):
    task_id: int
    deliveries: int
    note: str = ""
    """Why the task reaches no agent now, when it does not (:func:`no_agent_yet`)."""
    delayed: int = 0
    """Of ``deliveries``, those not pushed before their time (``delay``, ``jitter``)."""


def no_agent_yet(target: str, *, schedule: bool = False) -> str:
    """What to say of a task (or, ``schedule``, a schedule's tasks) whose ``target``
    (``tag:NAME`` or ``all``) no agent matches now: it is kept and reaches them later,
    which is not what a user who mistyped the tag expects to hear silently."""
    kind, _, name = target.partition(":")
    if kind == "tag":
        now = f"no agent carries tag {name!r} yet"
        later = "agents tagged or enrolled with it"
    elif kind == "all":
        now, later = "no agent is enrolled yet", "agents enrolled"
    else:
        return ""
    if schedule:
        return f"{now}: each firing's task reaches the {later} before that task's ttl ends"
    return f"{now} (0 deliveries now): the task reaches {later} before its ttl ends"


class DeliveryRow(View):
    """One line of ``task.list``: a delivery with its task's facts."""

    task_id: int
    delivery_id: int
    agent_id: str
    command: str
    state: str
    priority: int
    created_at: float
    expires_at: float
    command_line: str = ""
    """The task's whole command line, its args included (``file_get --path /etc/hosts``)."""
    args: dict[str, Any] = {}
    ttl: int = 0
    target: str = ""
    """``agent:ID``, ``tag:NAME``, ``selector:EXPR`` or ``all``."""
    investigation_id: str = ""


class HistoryEntry(View):
    """One entry of a delivery's history (XSOAR's war room): a run that asked to be run
    again (``state`` ``waiting``), or how the delivery ended (the last entry)."""

    run: int
    at: float
    """When the run finished, or when the daemon ended the delivery."""
    state: str
    """``waiting`` for a run that scheduled the next one; else the delivery's final state."""
    output: Any = None
    """The final run's output."""
    partial_result: Any = None
    """What a scheduled run returned to show while polling goes on."""
    poll_message: str = ""
    error: str = ""
    note: str = ""
    """What the daemon changed or decided, e.g. an interval raised to the floor."""
    next_run_at: float | None = None
    by: Literal["agent", "daemon"] = "agent"
    """``daemon`` for an entry the daemon wrote itself (a polling timeout, a ttl end, untask)."""
    next_command: str | None = None
    """What the scheduled next run runs: its command ..."""
    next_args: dict[str, Any] | None = None
    """... and its args."""
    items_remaining: int = 0
    """XSOAR ``ScheduledCommand(items_remaining=...)``."""


class DeliveryView(View):
    delivery_id: int
    agent_id: str
    state: str
    updated_at: float
    task_id: int = 0
    """The task it belongs to: the shown task, or a polling sequence one of its runs started."""
    sent_at: float | None = None
    acked_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    progress: str = ""
    result: Any = None
    error: str = ""
    run: int = 1
    """The current (or last) run: above 1 for a polling command."""
    next_run_at: float | None = None
    """When a ``waiting`` delivery's next run falls due."""
    poll_deadline: float | None = None
    """When its polling sequence times out."""
    next_command: str | None = None
    """A ``waiting`` delivery's next run: its command and args (XSOAR's PollingCommand, PollingArgs)."""
    next_args: dict[str, Any] | None = None
    history: list[HistoryEntry] | None = None
    """With ``task.get`` ``history``: the entries, oldest first (hidden ones left out)."""
    history_hidden: int = 0
    """Scheduled entries after the first that show nothing, left out (XSOAR hides them; the
    task's ``show_polling_output`` shows them)."""
    investigation_id: str = ""
    """The task's (LimaCharlie ``context``), with every result for correlation."""


class TaskView(View):
    task_id: int
    command: str
    args: dict[str, Any]
    target: str
    """``agent:ID``, ``tag:NAME``, ``selector:EXPR`` or ``all``."""
    priority: int
    ttl: int
    created_at: float
    expires_at: float
    state: str
    """``active`` (reaches new matching agents), ``closed`` (its ttl ended) or ``cancelled``;
    a task for one agent whose deliveries have all ended reads as how they ended (``done``,
    ``failed``, ``expired``, ``cancelled``: :func:`~tether.protocol.lifecycle.task_reads_as`)."""
    deliveries: list[DeliveryView]
    hide_polling_output: bool = False
    schedule: str | None = None
    """The recurring schedule that created this task, if one did."""
    investigation_id: str = ""
    """LimaCharlie's ``context`` / ``inv_id`` given when the task was created."""
    command_line: str = ""
    """``command`` with its ``args``, as one command line."""
    delay: float = 0.0
    """Seconds after its creation before it was pushed to any agent (``--delay``)."""
    jitter: float = 0.0
    """Up to this many seconds more, drawn per agent (``--jitter``): a delivery not yet due
    is ``delayed``, its time in ``next_run_at``."""


class Cancelled(View):
    cancelled: int
    """Deliveries cancelled."""
    tasks: int = 0
    """Tasks closed: they reach no new agent (the task untasked and its polling sequels, or
    the tag or selector tasks aimed at what was untasked)."""


class TagChanged(View):
    agent_id: str
    tag: str
    new_deliveries: int = 0
    """Deliveries the tag gave the agent (active tag tasks it had not received yet)."""


class DeliveryEvent(View):
    """Data of the ``delivery`` events ``task.wait`` sends as deliveries change state."""

    delivery_id: int
    agent_id: str
    state: str
    previous: str
    terminal: bool
    updated_at: float


class ProgressEvent(View):
    """Data of the ``progress`` events ``task.watch`` sends as a running command reports."""

    delivery_id: int
    agent_id: str
    progress: str
    """As ``show`` prints it: ``45% 4500/10000 files /etc/x``."""
    percent: float | None
    message: str
    updated_at: float


class ScheduleView(View):
    schedule_id: int
    name: str
    command: str
    """The command line, as given."""
    args: dict[str, Any]
    target: str
    every: float | None
    cron: str | None
    timezone: str
    ttl: int
    priority: int
    hide_polling_output: bool
    missed: str
    paused: bool
    created_at: float
    next_fire_at: float | None
    """None while paused."""
    last_fire_at: float | None
    fired: int
    """Tasks this schedule has created."""
    missed_total: int
    """Firings that fell due while tetherd was down (run once at start, or skipped)."""
    skipped: int
    """Of those, the ones not run (``missed`` = ``skip``)."""
    recent_tasks: list[int] = []
    """The newest tasks it created (``schedule.get`` only), newest first."""
    note: str = ""
    """``schedule.add`` only: why its tasks would reach no agent now (:func:`no_agent_yet`)."""


class ScheduleRemoved(View):
    name: str
    removed: bool


class TokenView(View):
    token_id: int
    role: str
    label: str
    created_at: float
    revoked_at: float | None
    token: str = ""
    """The clear token: in ``token.create``'s answer only (tetherd keeps a SHA-256 digest)."""


class KeyView(View):
    key_id: int
    tags: list[str]
    created_at: float
    expires_at: float | None
    uses_left: int | None
    revoked_at: float | None
    key: str = ""
    """The clear key: in ``key.create``'s answer only (tetherd keeps a SHA-256 digest)."""
    allow_requested_tags: bool = False
    """Agents enrolling with it may ask for tags beyond its own."""


class StateChange(View):
    """A tracked fact of an agent's state that changed from one report to the next."""

    at: float
    fact: str
    old: Any = None
    new: Any = None


class AgentDetail(View):
    """The answer to ``agent.get``: who the agent is, its latest state, its newest changes."""

    agent: AgentView
    state: AgentState | None = None
    """Its latest state report (None: it never sent one)."""
    state_at: float | None = None
    changes: list[StateChange] = []
    """Its newest state changes, newest first."""
    config: AgentConfigView | None = None
    """Its configuration status: desired, reported, drifted or not (``config show`` has the keys)."""


class ConfigLayerView(View):
    """A tag's or an agent's configuration layer once changed, and whom it reaches."""

    scope: Literal["tag", "agent"]
    name: str
    settings: dict[str, Any]
    """What the layer sets now (only what was set: the defaults are not repeated)."""
    agents: int = 0
    """The agents whose desired configuration it is part of."""
    pushed: int = 0
    """Of those, the online ones sent their new configuration now (the others get it when
    they connect)."""


class AgentConfigView(View):
    """``config.get``: an agent's desired configuration, where each key comes from, what the
    agent reported, and whether they differ (drift)."""

    agent_id: str
    desired: dict[str, Any]
    """Every key the agent should run with (defaults included)."""
    desired_hash: str
    origins: dict[str, str] = {}
    """Where each key of ``desired`` comes from: ``default``, ``tag:T`` or ``agent``."""
    reported: dict[str, Any] | None = None
    """Every key the agent reported it runs with (None: it never reported)."""
    reported_hash: str | None = None
    reported_at: float | None = None
    drift: bool = False
    error: str = ""
    """Why the agent did not apply the last configuration pushed to it."""


class DriftRow(View):
    """``config.drift``: an agent whose reported configuration is not its desired one."""

    agent_id: str
    hostname: str
    desired_hash: str
    reported_hash: str | None = None
    """None: the agent never reported one (it gets it when it connects)."""
    reported_at: float | None = None
    online: bool = False
    error: str = ""


class AgentResolved(View):
    """The answer to ``agent.approve``, ``agent.merge`` and ``agent.rm``."""

    agent_id: str
    outcome: Literal["approved", "merged", "removed"]
    into: str | None = None
    """Merged: the agent whose identity it took over (its id, tags and deliveries)."""
    cancelled: int = 0
    """Its unfinished deliveries, cancelled (removed, or merged: they were its own)."""
    sessions_closed: int = 0


class Revoked(View):
    revoked: bool
    """False if it was revoked already."""
    sessions_closed: int
    """Open sessions that used it, closed at once with 4010."""
