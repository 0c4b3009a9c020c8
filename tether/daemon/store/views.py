"""What the store shows consoles, made from stored rows: one way for every backend.

Each function takes a row as a tuple in the column order it names (what the SQLite
backend's query selects, and what the in-memory one builds), so every backend answers
the same views, byte for byte.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from ...protocol.agent_config import DEFAULTS, canonical, config_hash, desired, effective, origins
from ...protocol.agent_state import AgentState, changes
from ...protocol.alerts import AlertView
from ...protocol.cmdline import format_command_line
from ...protocol.codec import unpack
from ...protocol.console import (
    AgentConfigView,
    AgentDetail,
    AgentView,
    ConfigLayerView,
    DeliveryRow,
    DeliveryView,
    DriftRow,
    HistoryEntry,
    ScheduleView,
    StateChange,
    TaskView,
)
from ...protocol.frames import Configure
from ...protocol.lifecycle import DeliveryState, shown_history, task_reads_as

AGENT = ("id", "hostname", "platform", "enrolled_at", "last_seen", "commands", "tags", "revoked", "clone_of",
         "removed_at", "merged_into", "replaced_by")
"""An agent row: ``tags`` a list, ``revoked`` its token is void, ``commands`` MessagePack."""
TASK = ("id", "command", "args", "target_kind", "target", "priority", "ttl", "created_at", "expires_at", "state",
        "hide_polling_output", "schedule", "selector", "investigation_id", "delay", "jitter")
"""A task row: ``schedule`` the name of the schedule that made it."""
DELIVERY = ("id", "agent_id", "state", "updated_at", "sent_at", "acked_at", "started_at", "finished_at",
            "progress", "result", "error", "run", "next_run_at", "poll_deadline", "ended_by", "task_id", "command",
            "args")
HISTORY = ("delivery_id", "run", "at", "partial", "poll_message", "note", "next_run_at", "next_command",
           "next_args", "items_remaining")
LISTED = ("task_id", "id", "agent_id", "command", "state", "priority", "created_at", "expires_at", "args", "ttl",
          "target_kind", "target", "selector", "investigation_id")
"""A delivery as a listing shows it, with its task's fields."""
SCHEDULE = ("id", "name", "command", "args", "target_kind", "target", "every", "cron", "timezone", "ttl", "priority",
            "hide_polling_output", "missed", "paused", "created_at", "anchor", "next_fire_at", "last_fire_at",
            "fired", "missed_total", "skipped")


def target(kind: str, target: str, selector: str | None) -> str:
    """A task's target as a person reads it: ``agent:ID``, ``tag:T``, ``selector:EXPR``, ``all``."""
    if selector is not None:
        return f"selector:{selector}"
    return "all" if kind == "all" else f"{kind}:{target}"


def decode_result(blob: bytes | None) -> Any:
    try:
        return unpack(blob)
    except msgspec.DecodeError:
        return None


def agent_view(r: Sequence[Any]) -> AgentView:
    return AgentView(
        agent_id=r[0], hostname=r[1], platform=r[2], enrolled_at=r[3], last_seen=r[4],
        commands=unpack(r[5]) or [], tags=sorted(r[6]), online=False,
        revoked=bool(r[7]) and r[9] is None and r[11] is None, clone_of=r[8], removed_at=r[9], merged_into=r[10],
        replaced_by=r[11],
    )


def state_changes(old: bytes | None, new: AgentState) -> list[tuple[str, Any, Any]]:
    """The tracked facts that changed since the stored report ``old`` (none for a first report)."""
    return changes(None if old is None else msgspec.msgpack.decode(old, type=AgentState), new)


def agent_detail(agent: AgentView, state: Sequence[Any] | None, history: Sequence[Sequence[Any]]) -> AgentDetail:
    """``agent.get``'s answer: ``state`` is (state, reported_at), ``history`` rows are
    (at, fact, old, new), newest first (values MessagePack)."""
    return AgentDetail(
        agent=agent,
        state=None if state is None else msgspec.msgpack.decode(state[0], type=AgentState),
        state_at=None if state is None else state[1],
        changes=[StateChange(at=h[0], fact=h[1], old=unpack(h[2]), new=unpack(h[3])) for h in history],
    )


Layers = dict[str, dict[str, Any]]
"""Configuration layers by tag (or by agent): key -> value."""


class AgentConfig:
    """What the store knows of one agent's configuration: its tags and layers, and what it
    reported (``reported`` None: nothing yet)."""

    __slots__ = ("agent_layer", "error", "reported", "reported_at", "tag_layers", "tags")

    def __init__(self, tag_layers: Layers, tags: list[str], agent_layer: dict[str, Any],
                 reported: dict[str, Any] | None = None, reported_at: float | None = None, error: str = "") -> None:
        self.tag_layers, self.tags, self.agent_layer = tag_layers, tags, agent_layer
        self.reported, self.reported_at, self.error = reported, reported_at, error

    def desired(self) -> dict[str, Any]:
        return desired(self.tag_layers, self.tags, self.agent_layer)

    @property
    def reported_hash(self) -> str | None:
        return None if self.reported is None else config_hash(self.reported)

    def view(self, agent_id: str) -> AgentConfigView:
        wanted = self.desired()
        wanted_hash = config_hash(wanted)
        reported_hash = self.reported_hash
        return AgentConfigView(
            agent_id=agent_id, desired=effective(wanted), desired_hash=wanted_hash,
            origins={**dict.fromkeys(DEFAULTS, "default"), **origins(self.tag_layers, self.tags, self.agent_layer)},
            reported=None if self.reported is None else effective(self.reported), reported_hash=reported_hash,
            reported_at=self.reported_at, drift=wanted_hash != reported_hash, error=self.error,
        )


def configure(agent_id: str, settings: dict[str, Any]) -> tuple[str, Configure]:
    """The ``configure`` frame that gives the agent ``settings`` (its desired configuration)."""
    return agent_id, Configure(settings=settings, hash=config_hash(settings))


def blob(settings: dict[str, Any]) -> tuple[str, bytes]:
    """A configuration as it is stored once: its hash and its canonical bytes."""
    return config_hash(settings), canonical(settings)


def drift_row(agent_id: str, hostname: str, wanted: dict[str, Any], reported_hash: str | None,
              reported_at: float | None, error: str) -> DriftRow | None:
    """The agent's row in ``config.drift``, or None when it is not drifted (an agent that
    never reported is drifted only if it should run with something else than the defaults)."""
    wanted_hash = config_hash(wanted)
    if wanted_hash == reported_hash or (reported_hash is None and not wanted):
        return None
    return DriftRow(agent_id=agent_id, hostname=hostname, desired_hash=wanted_hash, reported_hash=reported_hash,
                    reported_at=reported_at, error=error)


def layer_view(scope: str, name: str, layer: dict[str, Any], agents: int) -> ConfigLayerView:
    return ConfigLayerView(scope=scope, name=name, settings=dict(sorted(layer.items())),  # type: ignore[arg-type]
                           agents=agents)


def task_view(t: Sequence[Any], deliveries: Sequence[Sequence[Any]], history: Sequence[Sequence[Any]] | None,
              now: float | None) -> TaskView:
    """A task and its deliveries (its own and its polling sequels', by id), with each
    delivery's history if ``history`` (every history row of those deliveries) is given.
    ``now``: a task whose ttl ended by then reads closed."""
    views = [
        DeliveryView(
            delivery_id=d[0], agent_id=d[1], state=d[2], updated_at=d[3], sent_at=d[4], acked_at=d[5],
            started_at=d[6], finished_at=d[7], progress=d[8], result=decode_result(d[9]), error=d[10],
            # An ended delivery has no next run, whatever its last schedule said.
            run=d[11], next_run_at=None if DeliveryState(d[2]).terminal else d[12],
            poll_deadline=d[13], investigation_id=t[13], task_id=d[15],
            next_command=d[16] if d[2] == DeliveryState.WAITING else None,
            next_args=unpack(d[17]) if d[2] == DeliveryState.WAITING and d[17] is not None else None,
        )
        for d in deliveries
    ]
    if history is not None:
        _add_history(views, [d[14] for d in deliveries], history, hide=bool(t[10]))
    args = unpack(t[2])
    return TaskView(
        task_id=t[0], command=t[1], args=args, target=target(t[3], t[4], t[12]),
        priority=t[5], ttl=t[6], created_at=t[7], expires_at=t[8],
        # A task for one agent whose delivery ended holds no ttl timer, so it is never
        # marked closed: past its ttl, it reads so.
        state=task_reads_as(t[9], t[3] == "agent", (v.state for v in views),
                            ttl_ended=now is not None and t[8] <= now), deliveries=views,
        hide_polling_output=bool(t[10]), schedule=t[11], investigation_id=t[13],
        command_line=format_command_line(t[1], args), delay=t[14], jitter=t[15],
    )


def _add_history(views: list[DeliveryView], ended_by: list[str | None], rows: Sequence[Sequence[Any]], *,
                 hide: bool) -> None:
    """Each delivery's history: the runs that scheduled another (``rows``, by delivery, run
    and when written), then how it ended. With ``hide`` (the default, as in XSOAR; a task's
    ``show_polling_output`` turns it off), scheduled entries after the first that carry no
    partial result are left out, and counted."""
    entries: dict[int, list[HistoryEntry]] = {v.delivery_id: [] for v in views}
    for row in rows:
        entries[row[0]].append(HistoryEntry(
            run=row[1], at=row[2], state=DeliveryState.WAITING, partial_result=decode_result(row[3]),
            poll_message=row[4], note=row[5], next_run_at=row[6], next_command=row[7],
            next_args=None if row[8] is None else decode_result(row[8]), items_remaining=row[9],
        ))
    for view, by in zip(views, ended_by, strict=True):
        shown = entries[view.delivery_id]
        if DeliveryState(view.state).terminal:
            # The daemon's end (ttl, untask, timeout) is the delivery's last write; a waiting
            # delivery's finished_at is still its last run's.
            at = view.updated_at if by == "daemon" else view.finished_at or view.updated_at
            shown.append(HistoryEntry(
                run=view.run, at=at, state=view.state, output=view.result,
                error=view.error, by="daemon" if by == "daemon" else "agent",
            ))
        view.history, view.history_hidden = shown_history(shown, hide=hide)


def delivery_row(r: Sequence[Any]) -> DeliveryRow:
    args = unpack(r[8]) or {}
    return DeliveryRow(
        task_id=r[0], delivery_id=r[1], agent_id=r[2], command=r[3], state=r[4], priority=r[5],
        created_at=r[6], expires_at=r[7], command_line=format_command_line(r[3], args), args=args,
        ttl=r[9], target=target(r[10], r[11], r[12]), investigation_id=r[13],
    )


def schedule_view(row: Sequence[Any], recent: list[int] | None = None) -> ScheduleView:
    return ScheduleView(
        schedule_id=row[0], name=row[1], command=row[2], args=unpack(row[3]), target=target(row[4], row[5], None),
        every=row[6], cron=row[7], timezone=row[8], ttl=row[9], priority=row[10],
        hide_polling_output=bool(row[11]), missed=row[12], paused=bool(row[13]), created_at=row[14],
        next_fire_at=row[16], last_fire_at=row[17], fired=row[18], missed_total=row[19], skipped=row[20],
        recent_tasks=recent or [],
    )


ALERT_COLUMNS = ("id", "agent_id", "kind", "name", "path", "hash", "severity", "message", "count", "first_seen",
                 "last_seen", "acked_at", "acked_count", "details", "raised_at", "delivery_id")
ALERT = ", ".join(ALERT_COLUMNS)
"""An alert row (``details`` MessagePack or NULL), as selected."""


def alert_view(r: Sequence[Any]) -> AlertView:
    return AlertView(
        alert_id=r[0], agent_id=r[1], kind=r[2], name=r[3], path=r[4], hash=r[5], severity=r[6], message=r[7],
        count=r[8], first_seen=r[9], last_seen=r[10], acked_at=r[11], acked_count=r[12] or 0,
        details=(decode_result(r[13]) or {}) if r[13] is not None else {}, raised_at=r[14] or 0.0,
        delivery_id=r[15],
    )
