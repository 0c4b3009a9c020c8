"""Facts about the machine the agent runs on, as sent in ``hello`` and ``enroll``.

The machine UUID matters: the daemon gives an agent that presents a known machine UUID
its old id back (Armadito "Enrollment": a changed machine UUID gets a new id). We prefer
the identifiers the OS already keeps stable (systemd's ``/etc/machine-id``, the SMBIOS
product UUID) over anything we would invent.
"""

from __future__ import annotations

import platform
import socket
import uuid
from pathlib import Path

import tether

USER_AGENT = f"tether-agent/{tether.__version__}"
MAX_FRAME_BYTES = 16 * 1024 * 1024
"""Largest frame the agent accepts from the daemon (a task's args travel in one frame)."""

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
