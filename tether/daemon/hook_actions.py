"""What a hook does (issue 20, after Check Point's SmartTasks): run a script, post a web
request, send an email. Each returns an :class:`Answer`, never raises for a failure of its
target, and takes at most its timeout; none blocks the event loop.

* ``script``: a file of ``<data-dir>/scripts/``, named without a path; the directory and the
  file owned by tetherd's user (or root) and writable by no one else, the file executable.
  Run without a shell, with a clean environment, in that directory, given the payload as
  base64-encoded JSON as its only argument; at its timeout its whole process group is killed.
* ``web``: an HTTPS POST of the JSON payload (no redirects followed), trusted by its pinned
  SHA-256 certificate fingerprint if it has one, else by the system's CAs; a shared secret
  sends ``X-Tether-Shared-Secret`` and signs ``X-Tether-Timestamp`` + body in
  ``X-Tether-Signature`` (:func:`tether.protocol.hooks.signature`).
* ``email``: through the SMTP server of ``tetherd.toml`` (STARTTLS or TLS, optional login).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import signal
import socket
import ssl
import stat
from email.message import EmailMessage
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from ..protocol.hooks import MESSAGE_MAX, render, signature

ANSWER_MAX = 65_536
"""Bytes kept of a script's output or a web response (the rest is read and dropped)."""

CLEAN_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
"""All a script's environment: nothing of tetherd's (no credentials, no TETHER_*)."""


class Answer(NamedTuple):
    """How an action went: ``ok``, ``error`` or ``timeout``; a message; and what the target
    answered (a script's stdout, a response body), for a before-hook's verdict."""

    outcome: str
    message: str = ""
    body: bytes = b""


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MESSAGE_MAX else text[: MESSAGE_MAX - 3] + "..."


# -- script ------------------------------------------------------------------------------------


class ScriptRefused(Exception):
    """The script cannot be run as it is (missing, a link, writable by others ...)."""


def _owned_safely(st: os.stat_result) -> bool:
    return st.st_uid in (os.geteuid(), 0) and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def script_path(scripts: Path, name: str) -> Path:
    """The script ``name`` of ``scripts``, checked; ScriptRefused says what is wrong."""
    try:
        st = os.lstat(scripts)
    except FileNotFoundError:
        raise ScriptRefused(f"{scripts} does not exist: create it (mode 0755, owned by tetherd's user) and put "
                            f"{name} in it") from None
    if not stat.S_ISDIR(st.st_mode) or not _owned_safely(st):
        raise ScriptRefused(f"{scripts} must be a directory owned by tetherd's user or root and writable by no one "
                            "else")
    path = scripts / name
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise ScriptRefused(f"no script {name!r} in {scripts}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ScriptRefused(f"{path} is not a regular file (links are not followed)")
    if not _owned_safely(st):
        raise ScriptRefused(f"{path} must be owned by tetherd's user or root and writable by no one else")
    if not st.st_mode & stat.S_IXUSR:
        raise ScriptRefused(f"{path} is not executable (chmod 0755 it)")
    return path


async def _drain(stream: asyncio.StreamReader | None) -> bytes:
    kept = bytearray()
    if stream is None:
        return b""
    while chunk := await stream.read(65_536):
        if len(kept) < ANSWER_MAX:
            kept += chunk[: ANSWER_MAX - len(kept)]
    return bytes(kept)


async def run_script(scripts: Path, name: str, payload: bytes, seconds: float) -> Answer:
    try:
        path = script_path(scripts, name)
        proc = await asyncio.create_subprocess_exec(
            str(path), base64.b64encode(payload).decode(), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=scripts, env=CLEAN_ENV,
            start_new_session=True)
    except (ScriptRefused, OSError) as exc:
        return Answer("error", _short(f"cannot run the script: {exc}"))
    try:
        async with asyncio.timeout(seconds):
            out, err, code = await asyncio.gather(_drain(proc.stdout), _drain(proc.stderr), proc.wait())
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        return Answer("timeout", f"the script did not finish within {seconds:g} s (killed)")
    if code != 0:
        said = err.decode(errors="replace").strip() or out.decode(errors="replace").strip()
        return Answer("error", _short(f"the script exited {code}" + (f": {said}" if said else "")), out)
    return Answer("ok", "", out)


# -- web ----------------------------------------------------------------------------------------


def _web_error(exc: BaseException, fingerprint: str) -> str:
    import aiohttp

    if isinstance(exc, aiohttp.ServerFingerprintMismatch):
        return (f"certificate fingerprint mismatch: the hook pins {fingerprint}, the server showed "
                f"{exc.got.hex()}: the call was refused")
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return (f"the server's certificate is not trusted ({exc.certificate_error}); pin its fingerprint "
                "(tetherctl hooks fingerprint URL)")
    return _short(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)


async def post(session: Any, url: str, payload: bytes, *, fingerprint: str, secret: str, seconds: float,
               now: float) -> Answer:
    """``session``: the daemon's one aiohttp ``ClientSession``."""
    import aiohttp

    headers = {"Content-Type": "application/json", "User-Agent": "tetherd-hooks"}
    if secret:
        stamp = str(int(now))
        headers |= {"X-Tether-Shared-Secret": secret, "X-Tether-Timestamp": stamp,
                    "X-Tether-Signature": signature(secret, stamp, payload)}
    pin: Any = aiohttp.Fingerprint(bytes.fromhex(fingerprint)) if fingerprint else True
    try:
        async with asyncio.timeout(seconds), session.post(url, data=payload, headers=headers, ssl=pin,
                                                          allow_redirects=False) as resp:
            body = await resp.content.read(ANSWER_MAX)
            if resp.status != 200:
                return Answer("error", _short(f"HTTP {resp.status} {resp.reason or ''}"), body)
            return Answer("ok", "", body)
    except TimeoutError:
        return Answer("timeout", f"no answer within {seconds:g} s")
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        return Answer("error", _web_error(exc, fingerprint))


async def fingerprint_of(url: str, seconds: float = 10.0) -> str:
    """The SHA-256 (hex) of the certificate the HTTPS server of ``url`` shows (not verified:
    this is how a self-signed server's is learnt)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or 443
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    async with asyncio.timeout(seconds):
        _, writer = await asyncio.open_connection(host, port, ssl=context, server_hostname=host)
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()
    return hashlib.sha256(der).hexdigest()


# -- email ----------------------------------------------------------------------------------------


class Smtp(NamedTuple):
    """The SMTP server email hooks send through (``tetherd.toml``)."""

    host: str
    port: int
    security: str
    """``starttls`` or ``tls``."""
    username: str = ""
    password: str = ""
    sender: str = ""
    ca: str = ""
    """A CA file to trust for the server's certificate (else the system's CAs)."""


def email_message(smtp: Smtp, to: list[str], subject: str, body: str, payload: dict[str, Any]) -> EmailMessage:
    message = EmailMessage()
    message["From"] = smtp.sender or f"tetherd@{socket.gethostname()}"
    message["To"] = ", ".join(to)
    message["Subject"] = " ".join(render(subject, payload).split())[:998]
    message.set_content(render(body, payload))
    return message


async def send_email(smtp: Smtp | None, message: EmailMessage, seconds: float) -> Answer:
    import aiosmtplib

    if smtp is None or not smtp.host:
        return Answer("error", "no SMTP server configured: set smtp_host (and smtp_port, smtp_security) in "
                                "tetherd.toml")
    context = ssl.create_default_context(cafile=smtp.ca or None)
    try:
        async with asyncio.timeout(seconds):
            await aiosmtplib.send(message, hostname=smtp.host, port=smtp.port, use_tls=smtp.security == "tls",
                                  start_tls=smtp.security == "starttls", tls_context=context,
                                  username=smtp.username or None, password=smtp.password or None, timeout=seconds)
    except TimeoutError:
        return Answer("timeout", f"the SMTP server did not accept the message within {seconds:g} s")
    except (aiosmtplib.SMTPException, OSError, ssl.SSLError) as exc:
        return Answer("error", _short(f"{type(exc).__name__}: {exc}"))
    return Answer("ok")
