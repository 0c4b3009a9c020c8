"""What an agent reports about itself (Armadito "State"), and which of it is a change.

An agent sends a ``state`` frame when its session opens and every ``state_interval`` (its
configuration, :mod:`.agent_config`). tetherd keeps the latest report of each agent and a
history of **changes only**: a report whose tracked facts are those of the one before
writes no history row, and each tracked fact that changed writes one.

Facts are of two kinds:

* **tracked** (:data:`TRACKED`): what an operator wants to know changed and when, and what
  changes rarely: agent version, OS and its version, platform, hostname, boot time, each
  mount's size, the memory size, the commands served;
* **gauges**: uptime, disk and memory use, tasks run, the last task. They move on every
  report; tetherd keeps their latest value only (a history of them would grow by a row per
  report and per agent).

An enrolled agent is not trusted (issue 15): every string, list and number below is bounded
in its type, so the decoder refuses a report that breaks a bound before anything of it is
used, and what one report can cost tetherd is bounded whatever it holds.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

DEFAULT_STATE_INTERVAL = 300.0
"""Seconds between two state reports unless the agent's configuration says otherwise."""
MIN_STATE_INTERVAL = 10.0
"""The shortest ``state_interval`` a configuration may set."""

MAX_TEXT = 256
"""Characters of a fact given as text (an OS version string, a hostname is at most 253)."""
MAX_PATH = 1024
"""Characters of a mount point."""
MAX_DISKS = 64
"""Mounts in one report: an agent with more names the first ones."""
MAX_COMMANDS = 1024
"""Commands served named in one report (as a hello's)."""
MAX_BYTES = 2**62
"""Largest size in bytes (disk, memory) a report may give."""
MAX_SECONDS = 2**40
"""Largest time or duration in seconds (a boot time, an uptime) a report may give."""

Text = Annotated[str, msgspec.Meta(max_length=MAX_TEXT)]
Bytes = Annotated[int, msgspec.Meta(ge=0, le=MAX_BYTES)]
Seconds = Annotated[float, msgspec.Meta(ge=0, le=MAX_SECONDS)]
"""A bounded, finite time: NaN and infinities are refused by the bounds."""


class Disk(msgspec.Struct, frozen=True, kw_only=True):
    """One mounted filesystem: its size and how much of it is used, in bytes."""

    mount: Annotated[str, msgspec.Meta(max_length=MAX_PATH)]
    total: Bytes = 0
    used: Bytes = 0


class LastTask(msgspec.Struct, frozen=True, kw_only=True):
    """The last task the agent ran: its command, when it ended, and whether it succeeded."""

    command: Text
    at: Seconds = 0.0
    ok: bool = True


class AgentState(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One state report's facts (see the module docstring for tracked facts and gauges)."""

    agent_version: Text = ""
    os: Text = ""
    """The operating system's name (``Ubuntu``, ``Windows``, ``Darwin``)."""
    os_version: Text = ""
    platform: Text = ""
    """tether's platform string, as in the hello (``linux-x86_64``)."""
    hostname: Text = ""
    boot_time: Seconds = 0.0
    """When the machine booted (UNIX time, whole seconds)."""
    uptime: Seconds = 0.0
    disks: Annotated[list[Disk], msgspec.Meta(max_length=MAX_DISKS)] = []
    memory_total: Bytes = 0
    memory_used: Bytes = 0
    commands: Annotated[list[Text], msgspec.Meta(max_length=MAX_COMMANDS)] = []
    """The commands the agent serves."""
    tasks_run: Bytes = 0
    """Tasks run since the agent started."""
    last_task: LastTask | None = None


TRACKED = ("agent_version", "os", "os_version", "platform", "hostname", "boot_time", "disks", "memory_total",
           "commands")
"""The facts whose changes are kept, one history row each (the others are gauges)."""


def tracked_value(state: AgentState, name: str) -> Any:
    """The value of a tracked fact as it is compared and kept in the history: a mount's
    size counts, not its use (``{mount: total}``); the commands as a sorted list."""
    if name == "disks":
        return {disk.mount: disk.total for disk in state.disks}
    if name == "commands":
        return sorted(state.commands)
    value: Any = getattr(state, name)
    return value


def changes(old: AgentState | None, new: AgentState) -> list[tuple[str, Any, Any]]:
    """The tracked facts that differ from ``old`` to ``new``: ``(name, old value, new
    value)`` each, in :data:`TRACKED` order. None for a first report: it is the baseline,
    not a change."""
    if old is None:
        return []
    found = []
    for name in TRACKED:
        before, after = tracked_value(old, name), tracked_value(new, name)
        if before != after:
            found.append((name, before, after))
    return found
