"""The daemon's URL as tetherctl and the agent take it, and what to say when it cannot be
reached: one wording for both tools.

A URL that is not ``ws://HOST[:PORT]`` or ``wss://HOST[:PORT]`` is bad input (exit 2),
refused before anything is sent; a failed connection gets the reason in words and what to
check (is tetherd running there? does it serve TLS?), never a bare exception name.
"""

from __future__ import annotations

import errno
import socket
import ssl
from urllib.parse import urlsplit

EXAMPLE = "ws://127.0.0.1:8765"


def url_problem(url: str) -> str | None:
    """Why ``url`` is not a daemon URL, in words; ``None`` when it is one."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"{url!r} is not a valid URL ({exc}); give e.g. {EXAMPLE}"
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        hint = f"ws://{url}" if parts.scheme not in ("ws", "wss", "http", "https") and "//" not in url else EXAMPLE
        return f"{url!r} is not a ws:// or wss:// URL; give e.g. {hint}"
    if port == 0 or parts.path not in ("", "/") or parts.query or parts.fragment:
        return f"{url!r} is not a daemon URL (ws[s]://HOST:PORT, nothing after the port); give e.g. {EXAMPLE}"
    return None


def _where(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'wss' else 80)}"


def connect_failure(exc: BaseException, url: str, where_set: str = "--server or TETHER_URL") -> str:
    """Why connecting to ``url`` failed, and what to check (``where_set``: where the tool
    takes the URL from). A certificate that does not verify is each tool's to explain
    (their flags differ); this says everything else."""
    # asyncio says "Multiple exceptions: [Errno 111] ..." when every address of a name refused
    if isinstance(exc, ConnectionRefusedError) or f"[Errno {errno.ECONNREFUSED}]" in str(exc):
        return (f"connection refused: is tetherd running and listening on {_where(url)}? "
                f"(check {where_set}, and tetherd's `listen`)")
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve {urlsplit(url).hostname!r} ({exc.strerror or exc}); check {where_set}"
    if isinstance(exc, TimeoutError):
        return f"no answer from {_where(url)} in time; check {where_set}, and any firewall between"
    text = str(exc) or type(exc).__name__
    tls_like = isinstance(exc, ssl.SSLError | ConnectionResetError) or isinstance(exc.__cause__, EOFError)
    if url.startswith("wss://") and tls_like:
        return f"{text}: the daemon may not serve TLS; if it does not, use a ws:// URL"
    if url.startswith("ws://") and isinstance(exc.__cause__, EOFError):
        return f"{text}: if tetherd serves TLS, use a wss:// URL"
    return text
