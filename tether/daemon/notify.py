"""systemd readiness and watchdog (sd_notify(3)), without a dependency.

With ``Type=notify`` systemd sets ``NOTIFY_SOCKET``; we send ``READY=1`` once listening,
``WATCHDOG=1`` from the event loop every half ``WATCHDOG_USEC`` (a stuck loop then gets
tetherd restarted), and ``STOPPING=1`` when draining. Outside systemd these do nothing.
"""

from __future__ import annotations

import asyncio
import os
import socket


def notify(message: str) -> bool:
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.sendto(message.encode(), address)
        except OSError:
            return False
    return True


def watchdog_interval() -> float | None:
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2_000_000


async def watchdog(interval: float) -> None:
    """Ping systemd's watchdog from the loop until cancelled."""
    while True:
        notify("WATCHDOG=1")
        await asyncio.sleep(interval)
