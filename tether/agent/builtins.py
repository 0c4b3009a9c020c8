"""Commands every agent serves, whatever else it was given (DESIGN "The agent").

``os_version`` answers LimaCharlie's classic first task; ``echo`` is the cheapest possible
round trip (benchmarks and smoke tests use it); ``scan`` hashes files and reports matches
with progress (:mod:`.scan`).
"""

from __future__ import annotations

import platform
import socket
from typing import Any

from .scan import scan
from .sdk import Agent

BUILTINS = Agent("builtins")

OS_RELEASE_KEYS = ("NAME", "VERSION_ID", "PRETTY_NAME")


@BUILTINS.command("os_version")
def os_version(args: dict[str, Any]) -> dict[str, Any]:
    """Real platform facts; ``os_release`` holds the os-release(5) fields when present."""
    uname = platform.uname()
    facts: dict[str, Any] = {
        "system": uname.system,
        "release": uname.release,
        "version": uname.version,
        "machine": uname.machine,
        "hostname": socket.gethostname(),
        "python": platform.python_version(),
    }
    try:
        # /etc/os-release, falling back to /usr/lib/os-release as os-release(5) says.
        release = platform.freedesktop_os_release()
    except OSError:
        release = {}
    picked = {key: release[key] for key in OS_RELEASE_KEYS if key in release}
    if picked:
        facts["os_release"] = picked
    return facts


@BUILTINS.command("echo")
async def echo(args: dict[str, Any]) -> dict[str, Any]:
    """Return the args unchanged."""
    return args


BUILTINS.add_command("scan", scan)
