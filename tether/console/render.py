"""How tetherctl shows results to a person: tables, task views, progress lines.

With ``--json`` tetherctl prints the daemon's raw result instead.

Text that comes from agents (hostnames, tags, progress, errors, outputs) is shown, never
obeyed: a control character (an escape sequence that would rewrite a line or set the
clipboard, a carriage return, a newline that would forge a table row), a bidirectional
override or a line separator is written as its escape (``\x1b``, ``\u202e``) by
:func:`visible`; JSON gets the same characters as JSON escapes (:func:`json_text`), so
``--json`` still parses to the exact string.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec

from tether.protocol import console as rpc
from tether.protocol.alerts import AlertList, AlertView
from tether.protocol.frames import Event
from tether.protocol.lifecycle import DeliveryState
from tether.protocol.polling import fmt_duration
from tether.protocol.tags import SEPARATOR

from .client import EXIT_OK, EXIT_TASK_FAILED, EXIT_TIMEOUT

# -- terminal safety -----------------------------------------------------------------------

HIDDEN = frozenset(
    [*map(chr, range(0x20)), *map(chr, range(0x7F, 0xA0)),     # C0, DEL, C1 (0x9b is a CSI)
     "\u061c", "\u200e", "\u200f", *map(chr, range(0x202A, 0x202F)), *map(chr, range(0x2066, 0x206A)),  # bidi
     "\u2028", "\u2029"]                                        # line and paragraph separators
)
"""Characters a terminal acts on or that reorder what it shows, instead of showing them."""


def _escape(ch: str) -> str:
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


_VISIBLE = str.maketrans({ch: _escape(ch) for ch in HIDDEN})
_VISIBLE_LINES = str.maketrans({ch: _escape(ch) for ch in HIDDEN if ch not in "\n\t"})
_JSON_SAFE = str.maketrans({ch: f"\\u{ord(ch):04x}" for ch in HIDDEN if ch >= "\x7f"})
"""JSON escapes the C0 characters inside strings itself; outside strings it writes only its
own newlines and spaces."""


def visible(value: object) -> str:
    """``str(value)`` with every :data:`HIDDEN` character written as its escape: one line of
    text that shows exactly what was sent."""
    return str(value).translate(_VISIBLE)


def visible_lines(text: str) -> str:
    """:func:`visible`, but newlines and tabs kept: for text tetherctl laid out itself."""
    return text.translate(_VISIBLE_LINES)


def json_text(value: Any, indent: int | None = 2, *, sort_keys: bool = True) -> str:
    """``value`` as JSON (non-ASCII kept as it is) with every :data:`HIDDEN` character as a
    ``\\uXXXX`` escape: it parses back to the same value, and a terminal shows it as text."""
    text = json.dumps(value, indent=indent, ensure_ascii=False, sort_keys=sort_keys)
    return text.translate(_JSON_SAFE)


# -- rendering -----------------------------------------------------------------------------


def fmt_time(ts: float | None) -> str:
    """A Unix time as ISO-8601 UTC, to the second; ``-`` when unset."""
    if not ts:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def fmt_priority(value: int) -> str:
    return rpc.PRIORITY_NAMES.get(value, str(value))


def render_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Columns padded to their widest cell; numbers right-aligned."""
    cells = [[str(c) for c in headers], *([visible(c) for c in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    numeric = [all(isinstance(row[i], int) for row in rows) and bool(rows) for i in range(len(headers))]
    lines = []
    for row in cells:
        parts = [c.rjust(w) if num else c.ljust(w) for c, w, num in zip(row, widths, numeric, strict=True)]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def _fields(pairs: Sequence[tuple[str, object]], indent: str = "  ") -> str:
    width = max(len(k) for k, _ in pairs)
    return "\n".join(f"{indent}{k.ljust(width)}  {visible(v)}" for k, v in pairs)


def _pretty(value: Any, indent: str) -> str:
    return "\n".join(indent + line for line in json_text(value).splitlines())


def render_agents(result: Any) -> str:
    agents = msgspec.convert(result, list[rpc.AgentView])
    if not agents:
        return "no agents"
    notes = [agent_note(a) for a in agents]
    noted = any(notes)  # the NOTE column only when there is something to say
    rows: list[tuple[str, ...]] = [
        (a.agent_id, a.hostname, a.platform,
         "revoked" if a.revoked else "replaced" if a.replaced_by else "yes" if a.online else "no",
         fmt_time(a.last_seen), SEPARATOR.join(a.tags) or "-", *([note or "-"] if noted else []))
        for a, note in zip(agents, notes, strict=True)
    ]
    header = ("AGENT", "HOSTNAME", "PLATFORM", "ONLINE", "LAST SEEN", "TAGS", *(["NOTE"] if noted else []))
    return render_table(header, rows)


def fmt_bytes(count: int) -> str:
    """A size in bytes as a person reads it: ``512 B``, ``1.5 KiB`` ... ``2.0 TiB``."""
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{count} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def _fact(name: str, value: Any) -> str:
    """A tracked fact's value in a change line."""
    if name == "boot_time":
        return fmt_time(value)
    if name == "memory_total" and isinstance(value, int):
        return fmt_bytes(value)
    if name == "disks" and isinstance(value, dict):
        return ", ".join(f"{mount} {fmt_bytes(total) if isinstance(total, int) else total}"
                         for mount, total in sorted(value.items())) or "-"
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "-"
    return "-" if value in ("", None) else str(value)


def render_agent(result: Any) -> str:
    """``agent show``: identity, then the latest state, then the newest state changes."""
    detail = msgspec.convert(result, rpc.AgentDetail)
    a = detail.agent
    pairs: list[tuple[str, object]] = [
        ("agent", a.agent_id), ("hostname", a.hostname or "-"), ("platform", a.platform or "-"),
        ("tags", SEPARATOR.join(a.tags) or "-"),
        ("online", "revoked" if a.revoked else "yes" if a.online else "no"),
        ("last seen", fmt_time(a.last_seen)), ("enrolled", fmt_time(a.enrolled_at)),
    ]
    if note := agent_note(a):
        pairs.append(("note", note))
    parts = [_fields(pairs, indent="")]
    state = detail.state
    if state is None:
        parts.append("state: none reported yet")
    else:
        facts: list[tuple[str, object]] = [
            ("agent version", state.agent_version or "-"),
            ("os", f"{state.os} {state.os_version}".strip() or "-"),
            ("boot time", fmt_time(state.boot_time)),
            ("uptime", fmt_duration(int(state.uptime)) if state.uptime >= 1 else "-"),
            ("memory", f"{fmt_bytes(state.memory_used)} used of {fmt_bytes(state.memory_total)}"
             if state.memory_total else "-"),
            *((f"disk {d.mount}", f"{fmt_bytes(d.used)} used of {fmt_bytes(d.total)}") for d in state.disks),
            ("commands", ", ".join(sorted(state.commands)) or "-"),
            ("tasks run", state.tasks_run),
        ]
        if state.last_task is not None:
            last = state.last_task
            facts.append(("last task", f"{last.command} at {fmt_time(last.at)} ({'ok' if last.ok else 'not ok'})"))
        parts.append(f"state (reported {fmt_time(detail.state_at)}):\n{_fields(facts)}")
    if detail.config is not None:
        parts.append(f"configuration: {_config_status(detail.config)}")
    if detail.changes:
        rows = [(fmt_time(c.at), c.fact, _fact(c.fact, c.old), _fact(c.fact, c.new)) for c in detail.changes]
        parts.append("state changes (newest first):\n" + render_table(("AT", "FACT", "BEFORE", "AFTER"), rows))
    return "\n".join(parts)


def _config_status(config: rpc.AgentConfigView) -> str:
    """One line: in sync, drifted (and why), or never reported."""
    desired = f"desired {config.desired_hash[:16]}"
    if config.error:
        return f"not applied: {config.error} ({desired})"
    if config.reported_hash is None:
        return f"not reported yet ({desired}; sent when it connects)"
    if config.drift:
        return f"drifted: reported {config.reported_hash[:16]}, {desired} (tetherctl config show {config.agent_id})"
    return f"in sync ({desired})"


def _setting(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value


def render_config_layer(result: Any) -> str:
    """``config set`` / ``unset``: the layer now, and whom it reached."""
    layer = msgspec.convert(result, rpc.ConfigLayerView)
    keys = ", ".join(f"{k}={_setting(v)}" for k, v in layer.settings.items()) or "nothing (the layers below apply)"
    return (f"{layer.scope} {layer.name} sets {keys}\n"
            f"{layer.agents} agent(s) reached, {layer.pushed} online sent their new configuration now")


def render_agent_config(result: Any) -> str:
    """``config show``: each key's desired value, where it comes from, and the reported one."""
    view = msgspec.convert(result, rpc.AgentConfigView)
    reported = view.reported or {}
    keys = sorted({*view.desired, *reported})
    rows = [(k, _setting(view.desired[k]) if k in view.desired else "-", view.origins.get(k, "-"),
             _setting(reported[k]) if k in reported else "-") for k in keys]
    status = ("never reported" if view.reported is None else "drifted" if view.drift else "in sync")
    lines = [f"agent {view.agent_id}: {status}",
             f"desired  {view.desired_hash[:16]}",
             f"reported {(view.reported_hash or '-')[:16]} at {fmt_time(view.reported_at)}"]
    if view.error:
        lines.append(f"error    {view.error}")
    return "\n".join(lines) + "\n" + render_table(("KEY", "DESIRED", "FROM", "REPORTED"), rows)


def render_drift(result: Any) -> str:
    rows_ = msgspec.convert(result, list[rpc.DriftRow])
    if not rows_:
        return "no agent drifted: every agent reported its desired configuration"
    rows = [(r.agent_id, r.hostname, "yes" if r.online else "no", r.desired_hash[:12],
             (r.reported_hash or "never")[:12], fmt_time(r.reported_at), r.error or "-") for r in rows_]
    return render_table(("AGENT", "HOSTNAME", "ONLINE", "DESIRED", "REPORTED", "REPORTED AT", "ERROR"), rows)


def agent_note(a: rpc.AgentView) -> str:
    """What an operator must know about an agent's identity, in words."""
    if a.merged_into is not None:
        return f"merged into {a.merged_into}"
    if a.removed_at is not None:
        return f"removed {fmt_time(a.removed_at)}"
    if a.replaced_by is not None:
        return f"replaced by {a.replaced_by} (its machine UUID changed; tetherctl agent rm {a.agent_id})"
    if a.clone_of is not None:
        return f"possible clone of {a.clone_of} (tetherctl agent approve|merge|rm {a.agent_id})"
    return ""


def render_deliveries(result: Any) -> str:
    rows_ = msgspec.convert(result, list[rpc.DeliveryRow])
    if not rows_:
        return "no deliveries"
    rows = [
        (r.task_id, r.delivery_id, r.agent_id, r.command_line or r.command, r.state, fmt_priority(r.priority),
         r.target or "-", f"{r.ttl} s" if r.ttl else "-", fmt_time(r.expires_at))
        for r in rows_
    ]
    return render_table(("TASK", "DELIVERY", "AGENT", "COMMAND", "STATE", "PRIORITY", "TARGET", "TTL", "EXPIRES"),
                        rows)


def render_task(result: Any, *, history: bool = False) -> str:
    task = msgspec.convert(result, rpc.TaskView)
    counts: dict[str, int] = {}
    for d in task.deliveries:
        counts[d.state] = counts.get(d.state, 0) + 1
    summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "none"
    out = [
        f"task {task.task_id}",
        _fields([
            ("command", task.command),
            ("args", json_text(task.args, indent=None)),
            *([("command line", task.command_line)] if task.command_line else []),
            ("target", task.target),
            *([("investigation", task.investigation_id)] if task.investigation_id else []),
            ("priority", f"{fmt_priority(task.priority)} ({task.priority})"),
            ("ttl", f"{task.ttl} s"),
            ("created", fmt_time(task.created_at)),
            *([("not before", f"created + {task.delay:g} s" + (f" + 0..{task.jitter:g} s per agent"
                                                                if task.jitter else ""))]
              if task.delay or task.jitter else []),
            ("expires", fmt_time(task.expires_at)),
            ("state", task.state),
            *([("schedule", task.schedule)] if task.schedule else []),
            *([("polling output", "runs after the first that show nothing are hidden" if task.hide_polling_output
                else "every run shown")] if any(d.run > 1 or d.poll_deadline for d in task.deliveries) else []),
            ("deliveries", summary),
        ]),
    ]
    for d in task.deliveries:
        pairs: list[tuple[str, object]] = [
            ("updated", fmt_time(d.updated_at)),
            ("sent", fmt_time(d.sent_at)),
            ("acked", fmt_time(d.acked_at)),
            ("started", fmt_time(d.started_at)),
            ("finished", fmt_time(d.finished_at)),
        ]
        if d.next_run_at is not None:
            what = "" if d.next_command is None else f"  {d.next_command} " + json.dumps(
                d.next_args or {}, ensure_ascii=False, sort_keys=True)
            label = "not before" if d.state == DeliveryState.DELAYED else "next run"
            pairs.append((label, fmt_time(d.next_run_at) + what))  # _fields makes it visible
        if d.poll_deadline is not None and d.state not in _TERMINAL:
            pairs.append(("polls until", fmt_time(d.poll_deadline)))
        if d.progress:
            pairs.append(("progress", d.progress))
        if d.error:
            pairs.append(("error", d.error))
        run = f"  run {d.run}" if d.run > 1 or d.poll_deadline is not None else ""
        sequel = f"  (polling sequence, task {d.task_id})" if d.task_id and d.task_id != task.task_id else ""
        out += ["", visible(f"delivery {d.delivery_id}  agent {d.agent_id}  {d.state}{run}") + sequel, _fields(pairs)]
        if d.result is not None:
            out += ["  result", _pretty(d.result, "    ")]
        if history and d.history is not None:
            out += _history(d)
    return "\n".join(out)


def _history(d: rpc.DeliveryView) -> list[str]:
    assert d.history is not None
    hidden = f", {d.history_hidden} hidden: they show nothing (--show-polling-output shows them)" \
        if d.history_hidden else ""
    out = [f"  history ({_count(len(d.history) + d.history_hidden, 'entry', 'entries')}{hidden})"]
    for e in d.history:
        head = f"    #{e.run}  {fmt_time(e.at)}  {visible(e.state)}"
        if e.by == "daemon":
            head += "  (by tetherd)"
        if e.poll_message:
            head += f"  {visible(e.poll_message)}"
        out.append(head)
        if e.note:
            out.append(f"      note: {visible(e.note)}")
        if e.error:
            out.append(f"      error: {visible(e.error)}")
        if e.next_run_at is not None:
            what = "" if e.next_command is None else visible(f"  {e.next_command} " + json.dumps(
                e.next_args or {}, ensure_ascii=False, sort_keys=True))
            out.append(f"      next run: {fmt_time(e.next_run_at)}{what}")
        if e.items_remaining:
            out.append(f"      items remaining: {e.items_remaining}")
        for label, value in (("partial result", e.partial_result), ("output", e.output)):
            if value is not None:
                out += [f"      {label}:", _pretty(value, "        ")]
    if not d.history:
        out.append("    (no run has finished yet)")
    return out


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _when(s: rpc.ScheduleView) -> str:
    if s.every is not None:
        return f"every {fmt_duration(s.every)}"
    return f"cron {s.cron}" + ("" if s.timezone == "UTC" else f" ({s.timezone})")


def render_schedules(result: Any) -> str:
    schedules = msgspec.convert(result, list[rpc.ScheduleView])
    if not schedules:
        return "no schedules"
    rows = [
        (s.name, _when(s), s.command, s.target, "paused" if s.paused else "active", fmt_time(s.next_fire_at),
         fmt_time(s.last_fire_at), s.fired)
        for s in schedules
    ]
    return render_table(("NAME", "WHEN", "COMMAND", "TARGET", "STATE", "NEXT", "LAST", "FIRED"), rows)


def render_schedule(result: Any) -> str:
    s = msgspec.convert(result, rpc.ScheduleView)
    pairs: list[tuple[str, object]] = [
        ("when", _when(s)),
        ("command", s.command),
        ("target", s.target),
        ("state", "paused" if s.paused else "active"),
        ("next firing", fmt_time(s.next_fire_at)),
        ("last firing", fmt_time(s.last_fire_at)),
        ("fired", _count(s.fired, "task", "tasks")),
        ("missed", f"{s.missed_total} while tetherd was down ({s.skipped} skipped); policy: {s.missed}"),
        ("task ttl", f"{s.ttl} s"),
        ("priority", f"{fmt_priority(s.priority)} ({s.priority})"),
        ("created", fmt_time(s.created_at)),
    ]
    if s.args:
        pairs.insert(2, ("args", json_text(s.args, indent=None)))
    if s.recent_tasks:
        pairs.append(("newest tasks", ", ".join(map(str, s.recent_tasks))))
    return "\n".join([visible(f"schedule {s.name}"), _fields(pairs)])


_TERMINAL = {s.value for s in DeliveryState if s.terminal}


def wait_outcome(result: Any) -> int:
    """The exit code of ``wait`` for its final TaskView."""
    task = msgspec.convert(result, rpc.TaskView)
    states = {d.state for d in task.deliveries}
    if states - _TERMINAL:
        return EXIT_TIMEOUT
    if states - {DeliveryState.DONE.value}:
        return EXIT_TASK_FAILED
    return EXIT_OK


def progress_line(event: Event) -> str:
    """One stderr line for a ``task.wait`` delivery event."""
    try:
        d = msgspec.convert(event.data, rpc.DeliveryView)
    except msgspec.ValidationError:
        return f"{visible(event.topic)}: {json_text(event.data, indent=None)}"
    line = f"{fmt_time(d.updated_at)}  delivery {d.delivery_id}  agent {d.agent_id}  {d.state}"
    if d.progress:
        line += f"  {d.progress}"
    if d.error:
        line += f"  error: {d.error}"
    return visible(line)


def render_tokens(result: Any) -> str:
    tokens = msgspec.convert(result, list[rpc.TokenView])
    rows = [(t.token_id, t.role, t.label or "-", fmt_time(t.created_at),
             "revoked " + fmt_time(t.revoked_at) if t.revoked_at is not None else "active") for t in tokens]
    return render_table(("ID", "ROLE", "LABEL", "CREATED", "STATE"), rows) if rows else "no admin tokens"


def render_keys(result: Any) -> str:
    keys = msgspec.convert(result, list[rpc.KeyView])
    rows = [(k.key_id, SEPARATOR.join(k.tags) or "-", "yes" if k.allow_requested_tags else "no", fmt_time(k.created_at),
             fmt_time(k.expires_at), "unlimited" if k.uses_left is None else k.uses_left,
             "revoked " + fmt_time(k.revoked_at) if k.revoked_at is not None else "active") for k in keys]
    header = ("ID", "TAGS", "MORE TAGS", "CREATED", "EXPIRES", "USES LEFT", "STATE")
    return render_table(header, rows) if rows else "no enrollment keys"


def render_alerts(result: Any) -> str:
    listed = msgspec.convert(result, AlertList)
    rows = [(a.alert_id, a.agent_id, a.severity, a.kind, a.name, a.path or a.hash or "-", a.count,
             fmt_time(a.first_seen), fmt_time(a.last_seen), _acked(a)) for a in listed.alerts]
    text = render_table(("ID", "AGENT", "SEVERITY", "KIND", "NAME", "WHERE", "COUNT", "FIRST SEEN", "LAST SEEN",
                         "ACKED"), rows) if rows else "no alerts"
    if listed.dropped:
        text += "\n\nover their rate limit (counted, not stored):\n" + render_table(
            ("AGENT", "DROPPED", "LAST"), [(d.agent_id, d.dropped, fmt_time(d.last_at)) for d in listed.dropped])
    return text


def _acked(a: AlertView) -> str:
    if a.acked_at is None:
        return "no"
    since = a.count - a.acked_count
    return f"{fmt_time(a.acked_at)}" + (f" (+{since} since)" if since else "")


def render_alert(result: Any) -> str:
    a = msgspec.convert(result, AlertView)
    pairs: list[tuple[str, object]] = [
        ("alert", a.alert_id), ("agent", a.agent_id), ("severity", a.severity), ("kind", a.kind), ("name", a.name)]
    pairs += [(k, v) for k, v in (("path", a.path), ("hash", a.hash), ("message", a.message)) if v]
    pairs += [("count", a.count), ("first seen", fmt_time(a.first_seen)), ("last seen", fmt_time(a.last_seen)),
              ("raised at", fmt_time(a.raised_at or None)), ("acked", _acked(a))]
    if a.delivery_id is not None:
        pairs.append(("delivery", a.delivery_id))
    if a.details:
        pairs.append(("details", json_text(a.details, indent=None)))
    return _fields(pairs, indent="")
