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
import socket
import uuid
from pathlib import Path

import tether

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
