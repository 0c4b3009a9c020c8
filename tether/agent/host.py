"""Facts about the machine the agent runs on, as sent in ``hello`` and ``enroll``.

The machine UUID an agent enrolls with is its state directory's on this host
(:func:`agent_machine_uuid`): two agents on one host (two state directories) are two
agents, and a re-imaged machine (a new ``/etc/machine-id``) is a new agent (Armadito
"Enrollment": a changed machine UUID gets a new id). The daemon uses it only to mark an
enrollment without proof from a known UUID as a possible clone: it is no secret. We prefer
the identifiers the OS already keeps stable (systemd's ``/etc/machine-id``, the SMBIOS
product UUID) over anything we would invent.
"""

from __future__ import annotations

import os
import platform
import shutil
import socket
import time
import uuid
from collections.abc import Iterable
from pathlib import Path

import tether
from tether.protocol.agent_state import (
    MAX_COMMANDS,
    MAX_DISKS,
    MAX_PATH,
    MAX_TEXT,
    AgentState,
    Disk,
    LastTask,
)

USER_AGENT = f"tether-agent/{tether.__version__}"
MAX_FRAME_BYTES = 4 * 1024 * 1024
"""Largest message the agent accepts from the daemon by default (``run --max-frame-bytes``):
a task's args travel in one frame, of at most tetherd's ``max_frame_bytes`` (1 MiB by
default) plus its own fields; tetherd's batches of tasks stay under 256 KiB unless one task
alone is bigger. A larger message closes the session (1009)."""

_MACHINE_ID_FILES = (Path("/etc/machine-id"), Path("/sys/class/dmi/id/product_uuid"))


def hostname() -> str:
    return socket.gethostname()


def platform_name() -> str:
    """``system-machine`` in lower case, e.g. ``linux-x86_64``: short and good for targeting."""
    uname = platform.uname()
    return f"{uname.system}-{uname.machine}".lower()


def machine_uuid(files: tuple[Path, ...] = _MACHINE_ID_FILES) -> str:
    """The first readable, non-empty stable id; else one derived from the MAC address.

    ``product_uuid`` is usually readable by root only; an unprivileged agent falls back to
    ``uuid.getnode()``, which is stable as long as the first network interface is.
    """
    for path in files:
        try:
            value = path.read_text(encoding="ascii", errors="replace").strip()
        except OSError:
            continue
        if value:
            return value
    return str(uuid.uuid5(uuid.NAMESPACE_OID, f"tether-agent-node:{uuid.getnode():012x}"))


_AGENT_NAMESPACE = uuid.UUID("5b0e6f0a-7a43-4c1e-9a55-2f1f5f6d7e01")


def agent_machine_uuid(state_dir: str | os.PathLike[str], host_id: str | None = None) -> str:
    """The machine UUID of the agent whose state directory is ``state_dir`` on this host:
    derived from the host's stable id (:func:`machine_uuid`) and the directory's absolute
    path, so another state directory on the same host is another agent."""
    path = Path(state_dir).resolve()
    return str(uuid.uuid5(_AGENT_NAMESPACE, f"{host_id if host_id is not None else machine_uuid()}\n{path}"))


# -- state reports (Armadito "State") ---------------------------------------------------------

_MOUNTS = Path("/proc/self/mounts")


def _mount_points(mounts: Path = _MOUNTS) -> list[str]:
    """The mount points of block devices (``/dev/...``), ``/`` always first; just ``/``
    where the mount table cannot be read (not Linux)."""
    points = ["/"]
    try:
        lines = mounts.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return points
    for line in lines:
        fields = line.split()
        if len(fields) >= 2 and fields[0].startswith("/dev/"):
            point = fields[1].replace("\\040", " ")
            if point not in points and len(point) <= MAX_PATH:
                points.append(point)
    return points[:MAX_DISKS]


def disks(points: Iterable[str] | None = None) -> list[Disk]:
    """Size and use of each mounted filesystem (those that cannot be read are left out)."""
    found = []
    for point in _mount_points() if points is None else points:
        try:
            usage = shutil.disk_usage(point)
        except OSError:
            continue
        found.append(Disk(mount=point, total=usage.total, used=usage.used))
    return found


def memory(meminfo: Path = Path("/proc/meminfo")) -> tuple[int, int]:
    """(total, used) bytes of memory; used is total less what is available. (0, 0) where
    neither /proc/meminfo nor sysconf says."""
    try:
        fields = dict(line.split(":", 1) for line in meminfo.read_text().splitlines() if ":" in line)
        total = int(fields["MemTotal"].split()[0]) * 1024
        available = int(fields["MemAvailable"].split()[0]) * 1024
        return total, max(0, total - available)
    except (OSError, KeyError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), 0
    except (AttributeError, OSError, ValueError):
        return 0, 0


def boot_time(stat: Path = Path("/proc/stat")) -> float:
    """When the machine booted, in whole seconds (the kernel's ``btime``; elsewhere the
    wall clock less the monotonic one, to the minute, so that it does not move between
    two reports)."""
    try:
        for line in stat.read_text().splitlines():
            if line.startswith("btime "):
                return float(int(line.split()[1]))
    except (OSError, ValueError):
        pass
    return float(int((time.time() - time.monotonic()) // 60 * 60))


def operating_system() -> tuple[str, str]:
    """The OS's name and version: os-release's NAME and VERSION_ID where there is one
    (``Ubuntu``, ``22.04``), else the platform module's (``Darwin``, ``23.1.0``)."""
    try:
        release = platform.freedesktop_os_release()
        return release.get("NAME", platform.system()), release.get("VERSION_ID", platform.release())
    except OSError:
        return platform.system(), platform.release()


def state(*, hostname: str, platform_name: str, commands: Iterable[str], tasks_run: int = 0,
          last_task: LastTask | None = None) -> AgentState:
    """This machine's facts for a state report, each cut to the protocol's bounds."""
    system, version = operating_system()
    booted = boot_time()
    total, used = memory()
    return AgentState(
        agent_version=tether.__version__, os=system[:MAX_TEXT], os_version=version[:MAX_TEXT],
        platform=platform_name[:MAX_TEXT], hostname=hostname[:MAX_TEXT], boot_time=booted,
        uptime=max(0.0, time.time() - booted), disks=disks(), memory_total=total, memory_used=used,
        commands=sorted(name[:MAX_TEXT] for name in commands)[:MAX_COMMANDS], tasks_run=tasks_run, last_task=last_task,
    )
